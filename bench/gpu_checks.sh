#!/usr/bin/env bash
# Issue 19's GPU checks on a lent device machine, prepared so that its 15 minutes go to measuring.
#
# Here first (pip reaches PyPI here, not there):
#   python scripts/device_kit.py --sd-scripts SD_SCRIPTS_CHECKOUT --sd-scripts-python ITS_VENV_PYTHON
# Then one device call per part, carrying the kit, back to back (the machine stays warm 30 s;
# a session has 15 minutes of device time, a start included, so check `status` between calls):
#   run(command="bash bench/gpu_checks.sh peers", carry=[".device"], timeout_s=600)    about 7 min
#   run(command="bash bench/gpu_checks.sh options", carry=[".device"], timeout_s=420)  about 4 min
#   run(command="bash bench/gpu_checks.sh activations", carry=[".device"], timeout_s=300)  if time is left
#
#   peers        Kiln against kohya sd-scripts, alternating rounds: SD 1.5 at 512 px, batch 1 and
#                4 (2 rounds), then SDXL at 1024 px, batch 1 (1 round); it/s and CUDA allocator
#                peaks of both, and Kiln's own memory estimate beside its peak
#   options      Kiln against the plain diffusers+peft loop at SD 1.5 512 px, batch 1 and 4: as
#                it is, then with each speed option that is off by default (train.channels_last;
#                train.compile at batch 1) on its own, the plain loop being the baseline each time
#   activations  the activation constants of engine/plan/memory.py measured on CUDA
#
# Figures and logs go to $OUT (what the device tool brings back: 8 files at most). With
# GPU_CHECKS_SMOKE=1 the same steps run on this machine's CPU at toy sizes (the tiny model where
# sd-scripts is not involved, 64 px where it is; neither SDXL nor compile, each minutes on a CPU):
# a trial of the script and the kit, not a measurement.
set -uo pipefail

part=${1:-}
case $part in peers | options | activations) ;; *)
    echo "usage: bash bench/gpu_checks.sh peers|options|activations (see the comment at its top)" >&2
    exit 2
    ;;
esac
out=${OUT:-/tmp/kiln-gpu-checks}
kit=.device
mkdir -p "$out"
log=$out/$part.log
if [ ! -d $kit/kiln ] || [ ! -d $kit/build ] || [ ! -d $kit/sd-scripts-wheels ] || [ ! -f $kit/sd-scripts/train_network.py ]; then
    echo "no kit in $kit/: run scripts/device_kit.py here first and carry .device" | tee "$log" >&2
    exit 2
fi
python=${GPU_CHECKS_PYTHON:-python3}
say() { echo "== $*" | tee -a "$log"; }

# Kiln from this working tree (editable, as in development); diffusers beside the machine's own
# torch, transformers, accelerate and peft. sd-scripts gets its pinned libraries in a folder of
# their own, put first on its path by a wrapper interpreter; torch is the machine's, for both.
install() {
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$1" "$2"/*.whl
}
install /tmp/kiln-site $kit/kiln || exit 2
install /tmp/sds-site $kit/sd-scripts-wheels || exit 2
install /tmp/build-site $kit/build || exit 2
PYTHONPATH=/tmp/build-site "$python" -m pip install -q --no-index --no-deps --no-build-isolation -e . >>"$log" 2>&1 || {
    tail -3 "$log"
    exit 2
}
sds_python=/tmp/kiln-sds-python
printf '#!/bin/sh\nPYTHONPATH=/tmp/sds-site exec %s "$@"\n' "$(command -v "$python")" >$sds_python
chmod +x $sds_python
export PYTHONPATH=/tmp/kiln-site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

say "machine"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    "$python" -c 'import torch, diffusers, transformers, peft, accelerate; print("kiln side:", *(f"{m.__name__} {m.__version__}" for m in (torch, diffusers, transformers, peft, accelerate)))'
    $sds_python -c 'import torch, diffusers, transformers, accelerate; print("sd-scripts side:", *(f"{m.__name__} {m.__version__}" for m in (torch, diffusers, transformers, accelerate)))'
    echo "sd-scripts commit $(cat $kit/sd-scripts/COMMIT)"
} 2>&1 | tee -a "$log"

bench() { # bench SECONDS NAME ARGS...: one bench.train_gpu run, its figures in $out/NAME.json
    local seconds=$1 name=$2
    shift 2
    say "bench.train_gpu $* (limit ${seconds}s)"
    timeout "$seconds" "$python" -m bench.train_gpu --json-out "$out/$name.json" "$@" 2>>"$log" | tee -a "$log"
    local status=${PIPESTATUS[0]}
    [ "$status" -eq 0 ] || echo "exit $status (124: over its limit); the end of $log says why" | tee -a "$log"
}

if [ "${GPU_CHECKS_SMOKE:-0}" = 1 ]; then
    sd15_peer=(--device cpu --resolution 64 --batches 1 --steps 2 --warmup 1 --rounds 1)
    plain=(--device cpu --tiny --batches 1 --steps 2 --warmup 1)
else
    sd15_peer=(--batches 1 4 --steps 30 --warmup 5 --rounds 2)
    plain=(--batches 1 4 --steps 30 --warmup 5)
fi
peers=(--sd-scripts $kit/sd-scripts --sd-scripts-python $sds_python)

case $part in
peers)
    bench 300 sd15-peer "${sd15_peer[@]}" "${peers[@]}"
    if [ "${GPU_CHECKS_SMOKE:-0}" != 1 ]; then
        bench 270 sdxl-peer --family sdxl --batches 1 --rounds 1 --steps 30 --warmup 5 "${peers[@]}"
    fi
    ;;
options)
    bench 90 plain "${plain[@]}"
    bench 90 channels-last "${plain[@]}" --kiln-set train.channels_last=true
    if [ "${GPU_CHECKS_SMOKE:-0}" != 1 ]; then
        # Not in a smoke run: Inductor's CPU codegen takes minutes (tests/train/test_speed_options.py
        # checks the compiled path at the Dynamo level). Batch 1 only: each batch shape compiles
        # the U-Net's forward and backward again, in the warm-up, within the call's minutes.
        bench 200 compile --batches 1 --steps 30 --warmup 5 --kiln-set train.compile=true
    fi
    ;;
activations)
    device=cuda
    [ "${GPU_CHECKS_SMOKE:-0}" = 1 ] && device=cpu
    say "activation constants on $device (engine/plan/memory.py's ACTIVATIONS)"
    timeout 90 "$python" scripts/measure_activations.py --family sd15 --device $device --precision bf16 fp32 \
        --json >"$out/activations-sd15.json" 2>>"$log" && tee -a "$log" <"$out/activations-sd15.json"
    if [ "${GPU_CHECKS_SMOKE:-0}" != 1 ]; then
        timeout 150 "$python" scripts/measure_activations.py --family sdxl --device cuda --precision bf16 --json \
            >"$out/activations-sdxl.json" 2>>"$log" && tee -a "$log" <"$out/activations-sdxl.json"
    fi
    ;;
esac
say "done"
