#!/usr/bin/env bash
# Rebuild the bundled default model end to end, as shipped in models/ and described in its model card.
#   bash scripts/build_default_model.sh            # SHARED=../shared/data STEPS=3000 VERSION=kefu-mini-v1.1
# Pretraining dominates: about an hour on 2 CPU cores for 3,000 steps (a GPU is used when present);
# it resumes where it stopped if interrupted. Each fine-tune takes about 5 minutes.
set -euo pipefail
SHARED=${SHARED:-../shared/data}
STEPS=${STEPS:-3000}
VERSION=${VERSION:-kefu-mini-v1.1}
ENCODER=models/kefu-mini-encoder

# 1. vocabulary + random 3-layer x 192 encoder, then masked-LM pretraining, shipped in fp16
kefu-router init-encoder -o runs/encoder-3x192 --shared-data "$SHARED" --layers 3 --hidden 192 --heads 3
kefu-router pretrain --encoder runs/encoder-3x192 -o runs/pretrained-3x192 --shared-data "$SHARED" --steps "$STEPS" --resume
kefu-router export-encoder runs/pretrained-3x192 -o "$ENCODER"

# 2. fine-tune (b) the pretrained encoder and (a) the same architecture from random init: same config,
#    each arm's learning rate chosen on the dev split from the same three rates
python -m kefu_router.training.sweep -c training/configs/default.yaml --lr 1e-4 3e-4 1e-3 -o runs/default \
    --set base_model="$ENCODER"
python -m kefu_router.training.sweep -c training/configs/default.yaml --lr 1e-4 3e-4 1e-3 -o runs/random-init \
    --set base_model=runs/encoder-3x192

# 3. test-split evaluation of both, with the TF-IDF + logistic-regression baseline (c)
kefu-router evaluate runs/default
kefu-router evaluate runs/random-init

# 4. export: a full bundle for benchmarks, the int8-only bundle that ships
kefu-router export runs/default -o runs/default/bundle --version "$VERSION"
kefu-router export runs/default -o models/default --version "$VERSION" --no-keep-fp32

# 5. the model card, every figure read from the files above
python -m kefu_router.training.model_card runs/default models/default "model_cards/$VERSION.md" \
    --notes "model_cards/notes/$VERSION.md" --compare "random init (same architecture)=runs/random-init" --pretrain "$ENCODER"
