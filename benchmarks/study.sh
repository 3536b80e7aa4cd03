#!/usr/bin/env bash
# The committed comparison studies under docs/results/, one (models, seeds) stage at a time.
#
#   bash benchmarks/study.sh polymnist [STAGE ...]      # every stage, or the given ones
#   bash benchmarks/study.sh polymnist-short             # the same study at the cpu-short settings
#   bash benchmarks/study.sh mnist_svhn_text-short       # MNIST-SVHN-Text at the cpu-short settings
#   bash benchmarks/study.sh polymnist-short-long        # CRMVAE and MoPoE of polymnist-short continued to 30 passes
#   bash benchmarks/study.sh mnist_svhn_text-short-long  # every run of mnist_svhn_text-short continued to 30 passes
#   COMMIT=1 bash benchmarks/study.sh polymnist         # git-commit each record as it is written, the report
#                                                       # folder (and the summary tables of README.md and
#                                                       # docs/results/index.md) after each model
#   PLAN=1 bash benchmarks/study.sh polymnist           # per stage, what is recorded and what remains; runs nothing
#
# Every stage is a `crmvae compare` into the same report folder: records already there are reused
# (a stage whose records all exist trains nothing), so the script can be stopped and rerun at any
# point and only the run in progress is lost. Runs and checkpoints go to $RUNS_DIR/<study folder>
# (outside git; one folder per study, since two studies of a dataset share model and seed names).
set -euo pipefail
cd "$(dirname "$0")/.."
dataset=${1:?usage: study.sh polymnist|polymnist-short|polymnist-short-long|mnist_svhn_text|mnist_svhn_text-short|mnist_svhn_text-short-long [STAGE ...]}
shift
RUNS_DIR=${RUNS_DIR:-$HOME/crmvae-study-runs}

polymnist_stages=("crmvae,mvtcae 0" "crmvae,mvtcae 1" "mopoe,mmjsd_poe,mvae 0" "crmvae,mvtcae 2"
                  "mopoe,mmjsd_poe,mvae 1" "mmvae,mmjsd 0")
mst_stages=("crmvae,mvtcae 0" "mopoe,mvae 0" "crmvae,mvtcae 1" "mopoe,mvae 1")
preset=paper
snapshots=1,3,10
seed_from=""
case $dataset in
  polymnist)
    # PolyMNIST at the paper's settings except the budget: 10 passes, recorded after 1, 3 and 10.
    # Stages 7-8 add CRMVAE with Eq. 8's 1/2 on both reconstructions (recon_coef=half), whose
    # latent does not collapse in the first pass as the pi form's does.
    out=docs/results/polymnist-study
    metrics="[coherence,fid,probes,similarity]"
    stages=("${polymnist_stages[@]}" "crmvae@recon_coef=half 0" "crmvae@recon_coef=half 1")
    ;;
  polymnist-short)
    # The same study at the cpu-short settings (beta 0.1, lr 1e-3, batch 128), where cross-coherence
    # leaves chance within a few passes.
    dataset=polymnist
    preset=cpu-short
    out=docs/results/polymnist-short-study
    metrics="[coherence,fid,probes,similarity]"
    stages=("${polymnist_stages[@]}")
    ;;
  polymnist-short-long)
    # Seed 0 of CRMVAE and MoPoE at the cpu-short settings, continued to 30 passes: does CRMVAE's
    # cross-coherence catch up with MoPoE's? A run starts from the polymnist-short study's records
    # and checkpoint where they exist, so only passes 11-30 train.
    dataset=polymnist
    preset=cpu-short
    out=docs/results/polymnist-short-long-study
    metrics="[coherence,fid,probes,similarity]"
    stages=("crmvae,mopoe 0")
    snapshots=1,3,10,30
    seed_from=polymnist-short-study
    ;;
  mnist_svhn_text)
    out=docs/results/mnist-svhn-text-study
    metrics="[coherence,fid,probes,similarity]"
    stages=("${mst_stages[@]}")
    ;;
  mnist_svhn_text-short)
    # The same study at the cpu-short settings: 30,000 of the 1.12 M training tuples, batch 128, lr 1e-3.
    dataset=mnist_svhn_text
    preset=cpu-short
    out=docs/results/mnist-svhn-text-short-study
    metrics="[coherence,fid,probes,similarity]"
    stages=("${mst_stages[@]}")
    ;;
  mnist_svhn_text-short-long)
    # Every run of the MNIST-SVHN-Text cpu-short study continued to 30 passes: do the
    # product-of-experts models' SVHN encoders leave chance? Only passes 11-30 train where the
    # short study's records and checkpoints exist.
    dataset=mnist_svhn_text
    preset=cpu-short
    out=docs/results/mnist-svhn-text-short-long-study
    metrics="[coherence,fid,probes,similarity]"
    stages=("${mst_stages[@]}")
    snapshots=1,3,10,30
    seed_from=mnist-svhn-text-short-study
    ;;
  *) echo "unknown study $dataset" >&2; exit 2 ;;
esac

selected=("$@")
study_args=(--dataset "$dataset" --preset "$preset" --snapshots "$snapshots" --snapshot-metrics coherence,probes,similarity
            --n-test 2000 --fid-samples 1000 --eval-set "metrics=$metrics" --eval-set progress=false
            --runs-dir "$RUNS_DIR/${out##*/}" --out "$out")
# The report of every record so far, with the study's models in their stage order (the first, CRMVAE,
# is the main one) and the seeds recorded.
report_all() {
  local models="" seeds m
  for m in $(tr ' ,' '\n\n' <<< "${stages[*]}" | grep -v '^[0-9]*$' | awk '!seen[$0]++'); do
    [[ -d $out/records/$m ]] && models+="$m,"
  done
  seeds=$(find "$out/records" -mindepth 2 -maxdepth 2 -name 'seed*' -printf '%f\n' | sed 's/seed//' | sort -nu | paste -sd,)
  crmvae compare "${study_args[@]}" --models "${models%,}" --seeds "$seeds" --report-only
}
# A run of a study that continues another: copy that study's run folder and records, whose settings
# are this study's, so that its recorded snapshots are reused and the run resumes from its checkpoint.
start_from_earlier_study() {
  local model=$1 seed=$2
  local from=$RUNS_DIR/$seed_from/$dataset/$model/seed$seed to=$RUNS_DIR/${out##*/}/$dataset/$model/seed$seed
  [[ -n $seed_from && -d $from && ! -e $to ]] || return 0
  echo "== $model seed $seed starts from docs/results/$seed_from and $from"
  mkdir -p "${to%/*}" "$out/records/$model/seed$seed"
  cp -r "$from" "$to"
  cp docs/results/"$seed_from"/records/"$model"/seed"$seed"/epoch* "$out/records/$model/seed$seed/"
}
if [[ ${PLAN:-0} == 1 ]]; then
  for i in "${!stages[@]}"; do
    if ((${#selected[@]})) && [[ ! " ${selected[*]} " =~ " $((i + 1)) " ]]; then continue; fi
    read -r models seeds <<< "${stages[$i]}"
    echo "== $dataset stage $((i + 1)): $models seed $seeds"
    crmvae compare "${study_args[@]}" --models "$models" --seeds "$seeds" --plan
  done
  exit 0
fi
if [[ ${COMMIT:-0} == 1 ]]; then
  # commit each record within a minute of its writing, so that a stop loses only the snapshot in progress
  (
    while sleep 60; do
      new=$(git status --porcelain --untracked-files=all -- "$out/records" | awk '{print $2}' | grep '\.json$' || true)
      if [[ -n $new ]]; then
        names=$(sed -e "s|^$out/records/||" -e 's|\.json$||' <<< "$new" | tr '\n' ' ')
        git add -- "$out/records" && git commit -q -m "$out: records ${names% }" -- "$out/records" \
          || echo "commit of $out/records failed; the next try commits it" >&2
      fi
    done
  ) &
  committer=$!
  trap 'kill $committer 2>/dev/null' EXIT
fi
for i in "${!stages[@]}"; do
  stage=$((i + 1))
  if ((${#selected[@]})) && [[ ! " ${selected[*]} " =~ " $stage " ]]; then continue; fi
  read -r models seeds <<< "${stages[$i]}"
  for model in ${models//,/ }; do
    echo "== $dataset stage $stage: $model seed $seeds ($(date -u +%H:%M:%S))"
    for seed in ${seeds//,/ }; do start_from_earlier_study "$model" "$seed"; done
    crmvae compare "${study_args[@]}" --models "$model" --seeds "$seeds"
    report_all
    crmvae summarize --update README.md --update docs/results/index.md  # their tables of every study's claims
    if [[ ${COMMIT:-0} == 1 ]]; then
      git add "$out" README.md docs/results/index.md
      if git diff --cached --quiet -- "$out" README.md docs/results/index.md; then
        echo "nothing new to commit in $out"
      else
        git commit -q -m "$out: $model seed $seeds recorded after ${snapshots//,/, } passes" -- "$out" README.md docs/results/index.md \
          || echo "commit of $out failed; the next stage commits it" >&2
      fi
    fi
  done
done
