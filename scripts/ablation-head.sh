#!/usr/bin/env bash
# Does global average pooling beat a fully connected head? Trains nin-mnist
# with the same mlpconv body and three heads -- GAP (NIN's), FC, and FC with
# dropout 0.5 on the flattened map -- under one budget and one seed set,
# then evaluates every model on the 10,000 MNIST test images and writes the
# table and curves of docs/gap-vs-fc.md. Two more GAP runs separate the head
# from the recipe: the last conv at the full learning rate (the preset uses
# 0.1x on the GAP head's only classifier weights), and no ReLU after the
# last conv (a class map clipped at zero cannot vote against its class).
#
#   bash scripts/ablation-head.sh                 # start, or continue after an interruption
#   EPOCHS=20 SEEDS="1 2 3 4 5" bash scripts/ablation-head.sh
#
# Runs are interleaved (seed 1: gap, fc, fc+dropout; then seed 2 ...) so a
# machine that slows down mid-way slows every head alike. Each run
# checkpoints every epoch in $WORK; rerunning skips finished runs and
# resumes the unfinished one exactly.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WORK=${WORK:-$HOME/.cache/ninbatch/ablation-head}
THREADS=${THREADS:-2}
EPOCHS=${EPOCHS:-6}
SEEDS=${SEEDS:-"1 2 3"}
mkdir -p "$WORK" bin
go build -o bin/ninbatch ./cmd/ninbatch
data=${DATA:-$WORK/data}
[ -f "$data/train.parquet" ] || bin/ninbatch dataset mnist --from "$(bash scripts/fetch-mnist.sh)" --out "$data"

# nin-mnist with the last block's learning-rate multipliers at 1 (weights) and 2 (biases)
cat >"$WORK/nin-mnist-lr1.json" <<'JSON'
{"name":"nin-mnist","input":{"h":28,"w":28,"c":1},"pooling":"ceil","blocks":[
 {"kernel":5,"stride":1,"pad":2,"channels":[96,64,48],"pool":{"type":"max","size":3,"stride":2},"dropout":0.5,"init_std":[0.05,0.05,0.05]},
 {"kernel":5,"stride":1,"pad":2,"channels":[128,96,48],"pool":{"type":"max","size":3,"stride":2},"dropout":0.5,"init_std":[0.05,0.05,0.05]},
 {"kernel":5,"stride":1,"pad":2,"channels":[128,96,10],"init_std":[0.05,0.05,0.05],"weight_lr":[1,1,1],"bias_lr":[2,2,2]}]}
JSON
declare -A head=(
  [gap]="--preset nin-mnist --head gap"
  [fc]="--preset nin-mnist --head fc --head-dropout 0"
  [fc-dropout]="--preset nin-mnist --head fc --head-dropout 0.5"
  [gap-lr1]="--spec $WORK/nin-mnist-lr1.json --head gap"
  [gap-nofinal]="--preset nin-mnist --head gap --no-final-relu"
)
VARIANTS=${VARIANTS:-"gap fc fc-dropout gap-nofinal gap-lr1"}
for seed in $SEEDS; do
  for v in $VARIANTS; do
    out="$WORK/$v-s$seed.nin"
    [ -f "$out" ] && continue
    # the same budget and recipe for every head: that of the shipped model, shortened
    args=(train ${head[$v]} --init-scheme lecun --seed "$seed"
          --epochs "$EPOCHS" --batch 128 --lr 0.05 --schedule cosine --warmup 1
          --momentum 0.9 --weight-decay 5e-4
          --val "$data/test.parquet" --out "$out" "$data/train.parquet")
    if [ -f "$out.ckpt" ]; then
      args=(train --resume --val "$data/test.parquet" --out "$out" --epochs "$EPOCHS" --batch 128 --lr 0.05
            --schedule cosine --warmup 1 --momentum 0.9 --weight-decay 5e-4 --seed "$seed" "$data/train.parquet")
    fi
    echo "ablation: $v seed $seed" >&2
    bin/ninbatch --log-format json --threads "$THREADS" "${args[@]}" >>"$WORK/train.log" 2>&1
  done
done

# test error of every model, from the scorer itself (not the training log)
for f in "$WORK"/*-s*.nin; do
  b=$(basename "$f" .nin)
  [ -f "$WORK/$b.eval.json" ] || bin/ninbatch eval --model "$f" --json "$data/test.parquet" >"$WORK/$b.eval.json"
done
go run ./scripts/ablation-head -work "$WORK" -png docs/gap-vs-fc.png >"$WORK/table.md"
cat "$WORK/table.md"
