#!/usr/bin/env bash
# Rebuild the bundled model kefu-mini-v1.2 from the real labelled set, as shipped in models/default and
# described in its model card. The encoder (models/kefu-mini-encoder) is unchanged: see build_default_model.sh.
#   bash scripts/build_real_model.sh        # SHARED=../shared/data VERSION=kefu-mini-v1.2
# On 2 CPU cores: the variants take 20-60 minutes each (two run at a time), the rest a few minutes.
set -euo pipefail
SHARED=${SHARED:-../shared/data}
VERSION=${VERSION:-kefu-mini-v1.2}
PREVIOUS=${PREVIOUS:-1613dae}   # the commit that shipped kefu-mini-v1.1
export KEFU_SHARED_DATA="$SHARED"

# 1. the real set: committed labels joined with the source text (prints rows gone or changed)
python -m kefu_router.training.corpus.real_set build --shared-data "$SHARED" -o runs/real-set/real.jsonl

# 2. every choice on the real dev rows: data mix, weak sources, trait masking, epochs
python -m kefu_router.training.choose -c training/configs/real.yaml --variants training/configs/real_choices.yaml \
    -o runs/real --jobs 2 --set threads=1 --set epochs=4 --set patience=2 --reuse

# 3. the test split, real and project rows apart, with the TF-IDF + LR baseline on the same training rows
kefu-router evaluate runs/real

# 4. the previous bundle on the same test rows
mkdir -p runs/previous
for f in model.int8.onnx tokenizer.json schema.json thresholds.json metadata.json; do
    git show "$PREVIOUS:models/default/$f" > "runs/previous/$f"
done
kefu-router evaluate runs/previous --data training/data/kefu_corpus.jsonl --data runs/real-set/real.jsonl -o runs/previous-eval

# 5. export (the int8 bundle that ships), behaviour tests, the model card
kefu-router export runs/real -o models/default --version "$VERSION" --no-keep-fp32
kefu-router cases --shared "$(dirname "$SHARED")" -o runs/real/cases.json
python -m kefu_router.training.model_card runs/real models/default "model_cards/$VERSION.md" \
    --notes "model_cards/notes/$VERSION.md" --compare "kefu-mini-v1.1 (previous)=runs/previous-eval" --cases runs/real/cases.json
