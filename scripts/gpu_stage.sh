#!/usr/bin/env bash
# A GPU training stage of the default weights, then its evaluation, in three short device calls.
#
# The device machine has PyTorch but neither SimpleITK nor MONAI, reaches no network, and takes
# 64 MiB per call with the checkout. So, once, here:
#     scripts/gpu_benchmark.sh --prepare                     # SimpleITK + MONAI -> .gpu_bench/site.tar.xz
#     python scripts/pack_training_data.py --data ../shared/data/totalseg-format --split train \
#         --exclude 'hn_kbp_17?' --exclude 'hn_kbp_18?' --exclude 'hn_kbp_19?' --exclude 'hn_kbp_200' \
#         --output .gpu_data/train.tar.xz    # window-quantised CTs (its docstring); 147 of 173 subjects,
#                                            # as the site and all of them are over one call's 64 MiB
#     python scripts/pack_training_data.py --data ../shared/data/totalseg-format --split val --subjects 'hn_*' \
#         --output .gpu_data/eval_hn.tar.xz
#     python scripts/pack_training_data.py --data ../shared/data/totalseg-format --split val --split test \
#         --subjects 'chest_*' --subjects 'thorax_*' --output .gpu_data/eval_big.tar.xz
# then on the device machine, one call after the other while it stays warm (state lives in $STAGE_WORK, default $TMPDIR/ctsam3d;
# the packs are split to keep each call under its 64 MiB):
#     scripts/gpu_stage.sh train     carry [.gpu_bench, .gpu_data/train.tar.xz]: unpacks them, starts
#                                    training and the old weights' runs (background)
#     scripts/gpu_stage.sh evaluate  carry [.gpu_data/eval_hn.tar.xz, .gpu_data/eval_big.tar.xz]: waits for the training, bundles
#                                    float16 weights into $OUT, starts the evaluations (background)
#     scripts/gpu_stage.sh collect   waits for the evaluations, packs their reports into $OUT/eval.tar.gz
# Overrides: STAGE_CONFIG (configs/compact_gpu_stage.yaml), STAGE_TRAIN_S (seconds of training at most),
# STAGE_WAIT_S (seconds a call waits), STAGE_SEEDS (0,1,2).
set -uo pipefail
cd "$(dirname "$0")/.."
work=${STAGE_WORK:-${TMPDIR:-/tmp}/ctsam3d}
out=${OUT:-out}
mkdir -p "$work" "$out"
export PYTHONPATH=$PWD:$work/site PYTHONUNBUFFERED=1
py() { python3 -m CTSAM3DLib.cli.main "$@"; }

wait_for() {  # wait_for FILE SECONDS: 0 once FILE exists, 1 on time-out
    local deadline=$((SECONDS + $2))
    while [[ ! -e $1 ]]; do
        ((SECONDS >= deadline)) && return 1
        sleep 5
    done
}

run_all() {  # run_all LIST PARALLEL TAG: evaluate jobs in the background (scripts/eval_runs.py)
    OMP_NUM_THREADS=2 setsid python3 scripts/eval_runs.py "$1" "$work/eval" "$work/eval_$3.done" --parallel "$2" \
        < /dev/null > "$work/eval_$3.log" 2>&1 &
}

case "${1:-}" in
train)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    mkdir -p "$work/site" "$work/data/train"
    tar -xJf .gpu_bench/site.tar.xz -C "$work/site" && tar -xJf .gpu_data/train.tar.xz -C "$work/data/train"
    find "$work/data" -name ct.nii -print0 | xargs -0 -P 16 -n 4 gzip -1  # the layout's ct.nii.gz
    python3 -c "import SimpleITK, monai, torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    cfg=${STAGE_CONFIG:-configs/compact_gpu_stage.yaml}
    setsid bash -c "timeout ${STAGE_TRAIN_S:-420} python3 -m CTSAM3DLib.cli.main train --config $cfg \
        --data $work/data/train --output $work/run --device cuda --no-progress > $work/train.log 2>&1;
        echo \$? > $work/train.rc;
        python3 scripts/bundle_weights.py $work/run/model.pt $work/model_fp16.pt --cpp-mode geometric \
            --cpp-min-agreement 0.3 --refine-passes 1 >> $work/train.log 2>&1; touch $work/train.done" \
        < /dev/null > /dev/null 2>&1 &
    old=Resources/weights/ctsam3d_compact.pt
    {
        echo "top20_old|--data Resources/sample --max-structures 20 --checkpoint $old --seed 0,1,2"
        echo "liver_old|--data Resources/sample --structures liver --first-click deepest --checkpoint $old --clicks 1"
    } > "$work/old_runs.txt"
    run_all "$work/old_runs.txt" 2 old
    sleep 45
    tail -n 20 "$work/train.log"
    ;;
evaluate)
    wait_for "$work/train.done" "${STAGE_WAIT_S:-480}" || echo "training still running"
    cat "$work/train.rc" 2>/dev/null; tail -n 30 "$work/train.log"
    cp "$work/model_fp16.pt" "$out/" 2>/dev/null
    cp "$work/train.log" "$work/run/metrics.jsonl" "$work/run/samples_per_subject.json" "$work/run/data_issues.txt" \
        "$out/" 2>/dev/null
    mkdir -p "$work/data/eval_big" "$work/data/eval_hn"
    tar -xJf .gpu_data/eval_big.tar.xz -C "$work/data/eval_big" && tar -xJf .gpu_data/eval_hn.tar.xz -C "$work/data/eval_hn"
    find "$work/data/eval_big" "$work/data/eval_hn" -name ct.nii -print0 | xargs -0 -P 16 -n 1 gzip -1
    new=$work/model_fp16.pt old=Resources/weights/ctsam3d_compact.pt seeds=${STAGE_SEEDS:-0,1,2}
    # One run per (weights/setting, subject), most wanted first; ctsam3d evaluate's per_click.csv of
    # each is merged afterwards. Clicks are CPU work around the CUDA network: 14 runs at once.
    val=("$work"/data/eval_hn/hn_* "$work"/data/eval_big/chest_nsclc_* "$work"/data/eval_big/thorax_*)
    {
        for s in "${val[@]}"; do echo "val_new/${s##*/}|--data $s --checkpoint $new --seed $seeds"; done
        echo "test_new|--data $work/data/eval_big --split test --checkpoint $new --seed 0,1,2,3,4,5"
        echo "top20_new|--data Resources/sample --max-structures 20 --checkpoint $new --seed 0,1,2"
        echo "liver_new|--data Resources/sample --structures liver --first-click deepest --checkpoint $new --clicks 1"
        for s in "${val[@]}"; do echo "val_new_network/${s##*/}|--data $s --checkpoint $new --seed 0 --cpp-mode network"; done
        for s in "${val[@]}"; do echo "val_new_reach10/${s##*/}|--data $s --checkpoint $new --seed 0 --cpp-reach-depth 10"; done
    } > "$work/eval_runs.txt"
    run_all "$work/eval_runs.txt" 14 new
    sleep 5
    ;;
collect)
    wait_for "$work/eval_new.done" "${STAGE_WAIT_S:-480}" || echo "evaluations still running; packing what is done"
    cat "$work"/eval_*.done "$work"/eval_*.log 2>/dev/null | tail -n 20
    tar -czf "$out/eval.tar.gz" -C "$work" eval
    find "$work/eval" -name summary.json | wc -l
    ;;
*)
    echo "usage: scripts/gpu_stage.sh train|evaluate|collect" >&2
    exit 2
    ;;
esac
