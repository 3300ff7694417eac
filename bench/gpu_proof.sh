#!/usr/bin/env bash
# The GPU proof in one call: every GPU target measured side by side (bench/README.md).
#
#   bench/gpu_proof.sh                   on a GPU: install, measure, bench/results/<device>.json, one line per target
#   bench/gpu_proof.sh --dry-run         on the CPU at toy sizes: the same code paths (device "cpu-dry-run"),
#                                        written to a temp folder, never to bench/results
#   bench/gpu_proof.sh --cpu-reference   on the CPU: the demo's greedy answers the GPU run compares with
#                                        (bench/results/demo-cpu-reference.json, committed)
#   bench/gpu_proof.sh --prepare-wheels  here, with a package index: .whl/wheels.tar.xz for a device without one
#
# Options: --out FILE   --wheels DIR (default .whl)   --budget-s S (measuring time, default 480)
#          --parts llava,qwen,fp16,demo,app,batch,levers (default all)
# Environment: PYTHON (default python3). Nothing is downloaded on the GPU machine: every model is
# built from a config with random weights, or is the bundled demo model.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
PY="${PYTHON:-python3}"
MODE=gpu
OUTFILE=""
WHEELS="$ROOT/.whl"
BUDGET=480
PARTS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) MODE=dry ;;
    --cpu-reference) MODE=reference ;;
    --prepare-wheels) MODE=wheels ;;
    --out) OUTFILE="$2"; shift ;;
    --wheels) WHEELS="$2"; shift ;;
    --budget-s) BUDGET="$2"; shift ;;
    --parts) PARTS="$2"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "error: unknown option $1 (see bench/gpu_proof.sh --help)" >&2; exit 2 ;;
  esac
  shift
done
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False TOKENIZERS_PARALLELISM=false
PROOF=(-m medln.bench.gpu_proof)

# The project's wheel and the pinned requirements: from the wheel folder where there is one (a
# device without an index), else from the index, else the environment as it is.
install() {
  local site=/tmp/medln-site wh=/tmp/medln-wheels
  if [ -f "$WHEELS/wheels.tar.xz" ] || compgen -G "$WHEELS/*.whl" >/dev/null; then
    rm -rf "$site" "$wh" && mkdir -p "$wh" || return 1
    if [ -f "$WHEELS/wheels.tar.xz" ]; then  # Python's tarfile: no xz binary needed there
      "$PY" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='data')" \
        "$WHEELS/wheels.tar.xz" "$wh" || return 1
    fi
    cp "$WHEELS"/*.whl "$wh"/ 2>/dev/null
    "$PY" -m pip wheel -q --no-deps --no-build-isolation --no-index -w "$wh" "$ROOT" || return 1
    # --no-deps: the folder is the whole install; the image keeps its CUDA torch (the pins line says what differs)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wh"/*.whl || return 1
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PATH="$site/bin:$PATH"
    echo "installed $(ls "$wh" | wc -l) wheels from $WHEELS into $site"
  elif "$PY" -m pip download -q --no-deps -d /tmp/medln-index-probe pip >/dev/null 2>&1; then
    "$PY" -m pip wheel -q --no-deps -w /tmp/medln-wheel "$ROOT" || return 1
    "$PY" -m venv --system-site-packages /tmp/medln-venv || return 1
    /tmp/medln-venv/bin/pip install -q /tmp/medln-wheel/medln-*.whl || return 1  # the wheel's dependencies are the pins
    PY=/tmp/medln-venv/bin/python
    export PATH="/tmp/medln-venv/bin:$PATH"
    echo "installed the medln wheel and its pinned requirements from the package index"
  else
    echo "no wheel folder ($WHEELS) and no package index: the environment as it is"
  fi
}

case "$MODE" in
  wheels)
    exec "$PY" "${PROOF[@]}" wheels --out "$WHEELS" ;;
  reference)
    exec "$PY" "${PROOF[@]}" reference ${OUTFILE:+--out "$OUTFILE"} ;;
  dry)
    [ -n "$OUTFILE" ] || OUTFILE="$(mktemp -d)/cpu-dry-run.json"
    "$PY" "${PROOF[@]}" run --dry-run --out "$OUTFILE" --budget-s "$BUDGET" ${PARTS:+--parts "$PARTS"}
    rc=$?
    "$PY" "${PROOF[@]}" summary "$OUTFILE" || rc=2
    echo "dry-run result: $OUTFILE (not a GPU result; not for bench/results)"
    exit $rc ;;
esac

t0=$(date +%s)
install || { echo "error: install failed" >&2; exit 2; }
echo "install: $(( $(date +%s) - t0 )) s"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [ -z "$OUTFILE" ]; then
  slug="$("$PY" -c 'import re, torch; print(re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower()).strip("-"))')" \
    || { echo "error: no CUDA device (use --dry-run on a CPU)" >&2; exit 2; }
  OUTFILE="$ROOT/bench/results/$slug.json"
fi
mkdir -p "$(dirname "$OUTFILE")"
# The hard stop is `timeout`; the driver itself starts no part or row it cannot finish in time.
timeout -k 15 "$BUDGET" "$PY" "${PROOF[@]}" run --out "$OUTFILE" --budget-s "$(( BUDGET - 30 ))" ${PARTS:+--parts "$PARTS"}
rc=$?
[ $rc -eq 124 ] && echo "the run reached its $BUDGET s limit: the summary judges what it measured"
"$PY" "${PROOF[@]}" summary "$OUTFILE" || rc=2
# On the device tool's machine, hand the result back with the call ($OUT is its return folder).
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ] && [ -f "$OUTFILE" ]; then cp "$OUTFILE" "$OUT/"; fi
echo "total: $(( $(date +%s) - t0 )) s; result: $OUTFILE"
exit $rc
