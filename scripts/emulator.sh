# Sourced by scripts/test.sh and cluster/local.sh: the DynamoDB + SQS emulator (moto
# server from PyPI, pinned in scripts/emulator-requirements.txt) in a venv under .build/.

EMULATOR_VENV=.build/venv
EMULATOR_REQUIREMENTS=scripts/emulator-requirements.txt

# Installs the venv, again only when the pinned requirements change.
emulator_install() {
  if ! cmp -s "$EMULATOR_REQUIREMENTS" "$EMULATOR_VENV/installed-requirements.txt" 2>/dev/null; then
    rm -rf "$EMULATOR_VENV"
    python3 -m venv "$EMULATOR_VENV"
    "$EMULATOR_VENV/bin/pip" install --quiet --disable-pip-version-check -r "$EMULATOR_REQUIREMENTS"
    cp "$EMULATOR_REQUIREMENTS" "$EMULATOR_VENV/installed-requirements.txt"
  fi
}

# Prints a free loopback port.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts moto on a free loopback port, logging to $1, and waits until it answers.
# Sets MOTO_PORT and MOTO_PID.
emulator_start() {
  local log=$1
  MOTO_PORT=$(free_port)
  mkdir -p "$(dirname "$log")"
  "$EMULATOR_VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$log" 2>&1 &
  MOTO_PID=$!
  for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$MOTO_PORT/moto-api/" 2>/dev/null; then return 0; fi
    if ! kill -0 "$MOTO_PID" 2>/dev/null; then cat "$log"; echo "moto server died" >&2; return 1; fi
    sleep 0.1
  done
  echo "moto server did not answer within 10 s (see $log)" >&2
  return 1
}
