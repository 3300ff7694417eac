#!/usr/bin/env bash
# Wall time of one 4-cell sweep (2 scopes x 2 seeds, bundled data and backbone) with each
# executor, interleaved: local, ray, local, ray, ... (ROUNDS rounds). The load average is printed
# beside every figure: on a shared machine the wall time says more about the neighbours than
# about medln. docs/scale.md quotes what this printed.
#   bench/sweep_executors.sh            # 1 round, 5 steps per cell
#   ROUNDS=3 STEPS=20 bench/sweep_executors.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-1}
steps=${STEPS:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "cores: $(nproc); 4 cells (ln, lora x seeds 0, 1), $steps steps each, eval-limit 8; ray: --ray-cpus ${RAY_CPUS:-1}"
for round in $(seq "$rounds"); do
  for executor in local ray; do
    before=$(cut -d' ' -f1 /proc/loadavg)
    t0=$(date +%s.%N)
    python -m medln compare --scopes ln,lora --seeds 2 --steps "$steps" --eval-limit 8 --executor "$executor" \
      --ray-cpus "${RAY_CPUS:-1}" --out "$work/$executor$round" --json > "$work/$executor$round.jsonl"
    t1=$(date +%s.%N)
    after=$(cut -d' ' -f1 /proc/loadavg)
    rows=$(python -c "import json,sys; r=json.load(open(sys.argv[1])); print(sum(x['status']=='completed' for x in r['rows']))" \
      "$work/$executor$round/results.json")
    printf '%-5s round %d: %6.1f s wall, %d/4 cells completed, load average (1 min) %s before, %s after\n' \
      "$executor" "$round" "$(python -c "print($t1 - $t0)")" "$rows" "$before" "$after"
  done
done
