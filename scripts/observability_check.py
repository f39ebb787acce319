"""Helpers of scripts/observability-check.sh (standard library only).

  upstream PORT_FILE        a fake content API and TMDB (what trailer onboarding calls);
                            writes its port to PORT_FILE, serves until killed
  prometheus-config SRC DST TARGETS_FILE
                            the repo's prometheus.yml, scraping every second, with its
                            local targets read from TARGETS_FILE
  k8s-config SRC DST        prometheus-k8s.yml with its Kubernetes discovery replaced by
                            static targets (for a promtool built without it)
  wait-scrapes PROM SINCE N every target scraped N times after unix time SINCE
  check PROM DASHBOARD ALERTS JOB
                            every panel query and alert expression through /api/v1/query:
                            no error, every panel query returns data; prints a table
  expect-condition PROM ALERTS holds|clears NAME...
                            each named alert's expression returns a series (holds) or
                            none (clears) within 20 s
"""

import json
import re
import sys
import time
import urllib.parse
import urllib.request
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

IMDB = "tt2543164"
TMDB_ID = 329865


class Upstream(BaseHTTPRequestHandler):
    def do_GET(self):
        path = urllib.parse.urlparse(self.path).path
        if path.startswith("/pc-se/film/"):
            product = {"content": {"imdb": {"id": IMDB}}}
            body = {"_embedded": {"viaplay:blocks": [{"_embedded": {"viaplay:product": product}}]}}
        elif path == f"/3/find/{IMDB}":
            body = {"movie_results": [{"id": TMDB_ID}]}
        elif path == f"/3/movie/{TMDB_ID}/videos":
            body = {"id": TMDB_ID, "results": [
                {"key": "check-trailer", "site": "YouTube", "type": "Trailer"}]}
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_):
        pass


def upstream(port_file):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    with open(port_file, "w") as f:
        f.write(str(server.server_address[1]))
    server.serve_forever()


def load_yaml(path):
    import yaml  # PyYAML, in the emulator venv

    with open(path) as f:
        return yaml.safe_load(f)


def dump_yaml(data, path):
    import yaml

    with open(path, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)


def prometheus_config(src, dst, targets_file):
    config = load_yaml(src)
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "playstate-local"]
    job["file_sd_configs"] = [{"files": [targets_file], "refresh_interval": "1s"}]
    dump_yaml(config, dst)


def k8s_config(src, dst):
    config = load_yaml(src)
    for job in config["scrape_configs"]:
        sd = job.pop("kubernetes_sd_configs")
        assert [c.get("role") for c in sd] == ["pod"], sd
        job["static_configs"] = [{"targets": ["playstate-0.example:8080"]}]
    dump_yaml(config, dst)


def api(prom, path, **params):
    url = f"{prom}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        return json.load(e)


def unix_time(rfc3339):
    """Prometheus' timestamps have nanoseconds, which datetime does not parse."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", rfc3339)
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(m.group(1) + zone).timestamp() + float(m.group(2) or 0)


def wait_scrapes(prom, since, count):
    """Every target's last scrape is `count` scrape intervals after `since`."""
    since, deadline = float(since), time.time() + 30
    while time.time() < deadline:
        targets = api(prom, "/api/v1/targets")["data"]["activeTargets"]
        after = [unix_time(t["lastScrape"]) - since for t in targets]
        # One scrape a second: the second one after `since` is at least 1 s after it.
        if targets and all(a >= int(count) - 0.5 for a in after):
            print(f"{len(targets)} targets scraped {count} times since the load ended")
            return
        time.sleep(0.2)
    sys.exit("timed out waiting for the scrapes")


def substitute(expr, job):
    return (expr.replace("$job", job).replace("$instance", ".*")
            .replace("$__rate_interval", "30s"))


def check(prom, dashboard_file, alerts_file, job):
    with open(dashboard_file) as f:
        dashboard = json.load(f)
    queries = [
        (f"panel  {p['title']} [{t['refId']}]", substitute(t["expr"], job), True)
        for p in dashboard["panels"] for t in p.get("targets", [])
    ]
    for v in dashboard["templating"]["list"]:
        # label_values(metric, label): the series query Grafana makes for it.
        m = re.fullmatch(r"label_values\((.*), (\w+)\)", v["query"]["query"])
        queries.append((f"variable ${v['name']}", substitute(m.group(1), job), True))
    rules = [r for g in load_yaml(alerts_file)["groups"] for r in g["rules"]]
    queries += [(f"alert  {r['alert']}", r["expr"], False) for r in rules]

    failures, rows = 0, []
    # An alert on a misspelt or renamed metric evaluates fine and never fires: every
    # metric a query names must be one the nodes export.
    exported = set(api(prom, "/api/v1/label/__name__/values")["data"])
    for name, expr, _ in queries:
        unknown = sorted(set(re.findall(r"\bplaystate_\w+", expr)) - exported)
        if unknown:
            failures += 1
            rows.append(("FAIL", name, f"no such metric: {', '.join(unknown)}"))
    for name, expr, needs_data in queries:
        answer = api(prom, "/api/v1/query", query=expr)
        if answer.get("status") != "success":
            verdict, detail = "FAIL", f"error: {answer.get('error')}"
        else:
            result = answer["data"]["result"]
            values = [float(s["value"][1]) for s in result]
            nan = sum(v != v for v in values)
            detail = f"{len(result)} series" + (f" ({nan} NaN)" if nan else "")
            if needs_data and not result:
                verdict, detail = "FAIL", "no data"
            elif not needs_data:
                verdict = "ok"
                detail = "condition holds now" if result else "condition false now"
            else:
                verdict = "ok"
        failures += verdict != "ok"
        rows.append((verdict, name, detail))

    # Prometheus' own evaluation of the rule file, every second during the run.
    groups = api(prom, "/api/v1/rules")["data"]["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        ok = rule.get("health") == "ok"
        failures += not ok
        rows.append(("ok" if ok else "FAIL", f"rule   {rule['name']}",
                     f"health {rule.get('health')}, state {rule.get('state')}"
                     + (f": {rule.get('lastError')}" if rule.get("lastError") else "")))
    targets = api(prom, "/api/v1/targets")["data"]["activeTargets"]
    for t in targets:
        ok = t["health"] == "up"
        failures += not ok
        rows.append(("ok" if ok else "FAIL", f"target {t['labels']['instance']}",
                     f"{t['health']} {t.get('lastError', '')}".strip()))
    if len(targets) != 3:
        failures += 1
        rows.append(("FAIL", "targets", f"{len(targets)} targets, wanted 3"))

    width = max(len(name) for _, name, _ in rows)
    for verdict, name, detail in rows:
        print(f"{verdict:4}  {name:{width}}  {detail}")
    print(f"\n{len(rows)} checks, {failures} failed")
    sys.exit(1 if failures else 0)


def expect_condition(prom, alerts_file, want, *names):
    exprs = {r["alert"]: r["expr"] for g in load_yaml(alerts_file)["groups"] for r in g["rules"]}
    deadline = time.time() + 20
    for name in names:
        while True:
            result = api(prom, "/api/v1/query", query=exprs[name])["data"]["result"]
            if bool(result) == (want == "holds"):
                series = [{**s["metric"], "value": s["value"][1]} for s in result]
                print(f"ok    alert  {name}: condition {want} {series or ''}".rstrip())
                break
            if time.time() > deadline:
                sys.exit(f"FAIL  alert  {name}: its condition never {want}")
            time.sleep(0.5)


if __name__ == "__main__":
    commands = {
        "upstream": upstream,
        "prometheus-config": prometheus_config,
        "k8s-config": k8s_config,
        "wait-scrapes": wait_scrapes,
        "check": check,
        "expect-condition": expect_condition,
    }
    commands[sys.argv[1]](*sys.argv[2:])
