#!/usr/bin/env python3
"""Writes playstate.json, the Grafana dashboard, from the panel list below (edit here,
not the JSON: `python3 cluster/grafana/dashboard.py`; `--check` fails when the JSON is
not what this writes). scripts/observability-check.sh evaluates every query below against
a real Prometheus scraping a loaded cluster.

One row per concern; every query selects `$job` (one cluster) and, per node, `$instance`.
The datasource is an import input (${DS_PROMETHEUS}), so the file imports anywhere."""

import json
import sys
from pathlib import Path

OUT = Path(__file__).with_name("playstate.json")
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
# The selector every query uses; the check substitutes the variables.
S = 'job=~"$job",instance=~"$instance"'
RATE = "$__rate_interval"
HEARTBEAT_ROUTES = (
    r"/v1/streams/\\{sessionId\\}|/heartbeat|/video-streams/subscription"
    r"|/user/\\{user_id\\}/stream"
)
# Routes that are not players' requests: the forwarded share is of the others.
OPS_ROUTES = "/metrics|/ready|/health|unmatched"


def rate(metric, extra="", by=None):
    sel = S + ("," + extra if extra else "")
    inner = f"rate({metric}{{{sel}}}[{RATE}])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def quantile(q, histogram, extra="", by=""):
    sel = S + ("," + extra if extra else "")
    group = f"{by}, le" if by else "le"
    return (
        f"histogram_quantile({q}, sum by ({group}) "
        f"(rate({histogram}_bucket{{{sel}}}[{RATE}])))"
    )


def t(expr, legend):
    return (expr, legend)


REQUESTS = rate("playstate_http_requests_total")
REQUESTS_5XX = rate("playstate_http_requests_total", 'status=~"5.."')
PLAYER_REQUESTS_BY_NODE = rate(
    "playstate_http_requests_total", f'route!~"{OPS_ROUTES}"', by="instance"
)
PROGRESS_UPDATES = rate("playstate_progress_updates_total")
PROGRESS_WRITES = rate("playstate_store_writes_total", 'op=~"progress_.*"')


# (row title, [(panel title, unit, kind, [(expr, legend), ...], description)])
ROWS = [
    ("Players", [
        ("Heartbeats/s by outcome", "reqps", "timeseries", [
            t(rate("playstate_heartbeats_total", by="outcome"), "{{outcome}}"),
        ], "taken: a new slot; renewed; refused: the account's stream limit."),
        ("Active streams per node", "short", "timeseries", [
            t(f"sum by (instance) (playstate_active_streams{{{S}}})", "{{instance}}"),
        ], "Stream slots held on each node."),
        ("Active users per node", "short", "timeseries", [
            t(f"sum by (instance) (playstate_active_users{{{S}}})", "{{instance}}"),
        ], "User actors running on each node."),
        ("Refusals/s", "reqps", "timeseries", [
            t(rate("playstate_heartbeats_total", 'outcome="refused"'), "stream limit"),
            t(rate("playstate_progress_refused_total"), "progress: dirty budget full"),
            t(rate("playstate_actor_unavailable_total"), "actor did not answer (503)"),
        ], "Requests refused: over the stream limit (429/400/403 by contract), progress "
           "refused because too much is unstored, actors that did not answer in time."),
        ("Streams ended/s", "reqps", "timeseries", [
            t(rate("playstate_stream_releases_total"), "stopped"),
            t(rate("playstate_stream_slots_expired_total"), "expired"),
        ], "Slots freed by a stop, and by a lease that ran out without heartbeats."),
    ]),
    ("HTTP", [
        ("Requests/s by route", "reqps", "timeseries", [
            t(rate("playstate_http_requests_total", by="route"), "{{route}}"),
        ], "Every route pattern (unmatched: 404s for unknown paths)."),
        ("p50 latency by route", "s", "timeseries", [
            t(quantile(0.5, "playstate_http_request_duration_seconds", by="route"),
              "{{route}}"),
        ], "From the first byte read to the response."),
        ("p99 latency by route", "s", "timeseries", [
            t(quantile(0.99, "playstate_http_request_duration_seconds", by="route"),
              "{{route}}"),
        ], "By route pattern."),
        ("Heartbeat latency (every contract)", "s", "timeseries", [
            t(quantile(0.5, "playstate_http_request_duration_seconds",
                       f'route=~"{HEARTBEAT_ROUTES}"'), "p50"),
            t(quantile(0.99, "playstate_http_request_duration_seconds",
                       f'route=~"{HEARTBEAT_ROUTES}"'), "p99"),
        ], "The alert fires when p99 is over 50 ms for 10 minutes (the goal is 10 ms)."),
        ("4xx and 5xx/s by status", "reqps", "timeseries", [
            t(rate("playstate_http_requests_total", 'status=~"4..|5.."', by="status"),
              "{{status}}"),
        ], "Client errors (4xx: refusals, bad input) and server errors (5xx)."),
        ("5xx share", "percentunit", "timeseries", [
            t(f"({REQUESTS_5XX} or vector(0)) / {REQUESTS}", "5xx / all"),
        ], "The alert fires at 5 % for 5 minutes."),
        ("Player connections", "short", "timeseries", [
            t(f"sum by (instance) (playstate_http_connections_open{{{S}}})", "open {{instance}}"),
            t(f"sum(increase(playstate_http_connections_refused_total{{{S}}}[{RATE}]))",
              "refused (server.max_connections)"),
            t(f"sum(increase(playstate_http_body_timeouts_total{{{S}}}[{RATE}]))",
              "bodies timed out (408)"),
        ], "Open connections per node; connections refused at the cap, and requests whose "
           "body did not arrive within server.body_timeout."),
    ]),
    ("Cluster", [
        ("Members by state", "short", "timeseries", [
            t(f"max by (state) (playstate_cluster_members{{{S}}})", "{{state}}"),
        ], "As the nodes see the member list: active, draining, leaving."),
        ("Leader", "short", "timeseries", [
            t(f"max by (instance) (playstate_cluster_is_leader{{{S}}})", "{{instance}}"),
        ], "1 on the Raft leader."),
        ("Raft term", "short", "stat", [
            t(f"max(playstate_cluster_term{{{S}}})", "term"),
        ], "A term that keeps rising means repeated elections."),
        ("Shards per node", "short", "timeseries", [
            t(f"sum by (instance) (playstate_cluster_shards_owned{{{S}}})", "{{instance}}"),
            t(f"max(playstate_cluster_shards{{{S}}})", "all shards"),
            t(f"max(playstate_cluster_shards_moving{{{S}}})", "moving"),
        ], "Shards each node owns, the cluster's total and those being handed over."),
        ("Ownership lease", "short", "timeseries", [
            t(f"max by (instance) (playstate_cluster_lease_valid{{{S}}})", "{{instance}}"),
        ], "1 while a node holds its ownership lease (may serve its shards)."),
        ("Forwarded share", "percentunit", "timeseries", [
            t(f"{rate('playstate_forwarded_commands_total', by='instance')} / "
              f"{PLAYER_REQUESTS_BY_NODE}", "{{instance}}"),
        ], "User commands a node sent to the owning node, per player request it received."),
        ("Forwarded commands/s by outcome", "reqps", "timeseries", [
            t(rate("playstate_forwarded_commands_total", by="outcome"), "{{outcome}}"),
            t(quantile(0.99, "playstate_forward_duration_seconds"), "p99 seconds"),
        ], "ok, moved (the owner's table was newer; retried), unavailable, error."),
        ("Handoffs", "short", "timeseries", [
            t(f"sum(increase(playstate_handoff_shards_moved_total{{{S}}}[{RATE}]))",
              "shards moved"),
            t(f"sum(increase(playstate_handoff_failures_total{{{S}}}[{RATE}]))",
              "batches failed"),
            t(f"sum(increase(playstate_handoff_waited_requests_total{{{S}}}[{RATE}]))",
              "requests that waited"),
            t(f"sum(increase(playstate_failover_shards_total{{{S}}}[{RATE}]))",
              "shards failed over"),
        ], "Planned moves (join, drain, rebalance) and failovers."),
        ("Handoff batch duration", "s", "timeseries", [
            t(quantile(0.5, "playstate_handoff_duration_seconds"), "p50"),
            t(quantile(0.99, "playstate_handoff_duration_seconds"), "p99"),
        ], "From stop to new owner, per batch (measured by the leader)."),
    ]),
    ("Storage", [
        ("Progress updates vs store writes/s", "ops", "timeseries", [
            t(PROGRESS_UPDATES, "updates accepted"),
            t(PROGRESS_WRITES, "progress written"),
            t(rate("playstate_store_writes_total", 'op=~"watchlist_.*"'), "watchlist written"),
        ], "Updates land in memory; flushes write each entry's latest value."),
        ("Write-behind ratio", "short", "timeseries", [
            t(f"{PROGRESS_UPDATES} / {PROGRESS_WRITES}", "updates per store write"),
        ], "Progress updates per progress item written: what write-behind saves."),
        ("Flush latency", "s", "timeseries", [
            t(quantile(0.5, "playstate_flush_duration_seconds"), "p50"),
            t(quantile(0.99, "playstate_flush_duration_seconds"), "p99"),
        ], "One batch of dirty progress written to the store."),
        ("Flush failures and store errors/s", "ops", "timeseries", [
            t(rate("playstate_flush_failures_total"), "flush failures"),
            t(rate("playstate_store_errors_total"), "store errors"),
        ], "Failed flushes are retried; the alert fires when most fail."),
        ("Dirty progress entries", "short", "timeseries", [
            t(f"sum by (instance) (playstate_progress_dirty_entries{{{S}}})", "{{instance}}"),
            t(f"max(playstate_progress_dirty_budget{{{S}}})", "budget (per node)"),
        ], "Unstored entries per node; at the budget, updates get 503."),
        ("Progress lost", "short", "timeseries", [
            t(f"sum by (instance) (increase(playstate_progress_lost_total{{{S}}}[{RATE}]))",
              "{{instance}}"),
        ], "Progress entries whose last acknowledged value was never stored: a shutdown "
           "the store did not answer, or a crash (counted at the next start, never under)."),
    ]),
    ("BI events", [
        ("Events/s by outcome", "ops", "timeseries", [
            t(rate("playstate_bi_events_total", by="outcome"), "{{outcome}}"),
        ], "queued, delivered, failed (a delivery attempt)."),
        ("Events queued/s by event", "ops", "timeseries", [
            t(rate("playstate_bi_events_total", 'outcome="queued"', by="event"), "{{event}}"),
        ], "Which changes emit events."),
        ("Outbox depth", "short", "timeseries", [
            t(f"sum by (instance) (playstate_outbox_depth{{{S}}})", "{{instance}}"),
            t(f"max(playstate_outbox_capacity{{{S}}})", "capacity (per node)"),
        ], "Events waiting for delivery; when full, changes that emit one get 503."),
    ]),
    ("Trailers", [
        ("Lookups/s by result", "reqps", "timeseries", [
            t(rate("playstate_trailer_lookups_total", by="result"), "{{result}}"),
        ], "hit, miss (no trailers known), invalid (not a content URL)."),
        ("Onboarding by outcome", "short", "timeseries", [
            t(f"sum by (outcome) (increase(playstate_trailer_messages_total{{{S}}}[{RATE}]))",
              "{{outcome}}"),
        ], "New-content messages: onboarded, rejected (never succeeds), retry."),
        ("TMDB requests/s by status", "reqps", "timeseries", [
            t(rate("playstate_tmdb_requests_total", by="status"), "{{status}}"),
        ], "HTTP status of each TMDB call (error: no answer)."),
        ("TMDB latest status", "none", "stat", [
            t(f"max by (instance) (playstate_tmdb_last_status{{{S}}})", "{{instance}}"),
        ], "TMDB's latest answer per node: 200 good, 401/403 bad token, 429 rate-limited, "
           "-1 unreachable, 0 no call yet (or onboarding off)."),
        ("Trailer cache", "short", "timeseries", [
            t(f"max(playstate_trailer_cache_entries{{{S}}})", "entries"),
            t(f"sum by (outcome) (increase(playstate_trailer_refreshes_total{{{S}}}[{RATE}]))",
              "refreshes {{outcome}}"),
        ], "Content URLs known (replicated to every node), and stale ones re-resolved."),
    ]),
]

TMDB_MAPPINGS = [
    {"type": "value", "options": {"0": {"text": "no call yet", "color": "text"}}},
    {"type": "value", "options": {"-1": {"text": "unreachable", "color": "red"}}},
    {"type": "range", "options": {"from": 200, "to": 299, "result": {"color": "green"}}},
    {"type": "range", "options": {"from": 400, "to": 599, "result": {"color": "red"}}},
]


def panel(pid, title, unit, kind, targets, description, x, y):
    p = {
        "id": pid,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 8, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend,
             "refId": chr(ord("A") + i)}
            for i, (expr, legend) in enumerate(targets)
        ],
    }
    if kind == "timeseries":
        p["options"] = {"legend": {"displayMode": "list", "placement": "bottom"},
                        "tooltip": {"mode": "multi"}}
    if title == "TMDB latest status":
        p["fieldConfig"]["defaults"]["mappings"] = TMDB_MAPPINGS
    return p


def variable(name, label, query):
    return {
        "name": name, "label": label, "type": "query", "datasource": DATASOURCE,
        "query": {"query": query, "refId": name}, "definition": query,
        "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2, "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


def dashboard():
    panels, pid, y = [], 1, 0
    for row_title, row_panels in ROWS:
        panels.append({"id": pid, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y = pid + 1, y + 1
        for i, spec in enumerate(row_panels):
            panels.append(panel(pid, *spec, x=(i % 3) * 8, y=y + (i // 3) * 8))
            pid += 1
        y += ((len(row_panels) + 2) // 3) * 8
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus",
                      "description": "The Prometheus that scrapes playstate",
                      "type": "datasource", "pluginId": "prometheus",
                      "pluginName": "Prometheus"}],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus",
             "version": "1.0.0"},
            {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
            {"type": "panel", "id": "stat", "name": "Stat", "version": ""},
        ],
        "title": "playstate",
        "uid": "playstate",
        "description": "playstate nodes: players, HTTP, cluster, storage, BI events, "
                       "trailers. Generated by cluster/grafana/dashboard.py.",
        "tags": ["playstate"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "annotations": {"list": []},
        "templating": {"list": [
            variable("job", "cluster (job)", "label_values(playstate_cluster_term, job)"),
            variable("instance", "node",
                     'label_values(playstate_cluster_term{job=~"$job"}, instance)'),
        ]},
        "panels": panels,
    }


def main():
    text = json.dumps(dashboard(), indent=2) + "\n"
    if sys.argv[1:] == ["--check"]:
        if OUT.read_text() != text:
            sys.exit(f"{OUT} is not what {Path(__file__).name} writes: run it")
        return
    OUT.write_text(text)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
