#!/usr/bin/env bash
# The GPU check of issues 16 and 27 in one go: install the carried wheels (if any), run the
# training benchmark (python -m benchmarks.train_gpu), the side-by-side table of each change
# (python -m benchmarks.gpu_variants: compile modes, channels-last, batch sizes; evaluation's
# clips/s on the GPU and the CPU), then `pytest -m gpu`; logs and JSON in OUT_DIR.
#
#   bash benchmarks/gpu_check.sh OUT_DIR        # from the repository root, on a CUDA machine
#   BENCH_ARGS=--tiny VARIANT_ARGS=--tiny bash benchmarks/gpu_check.sh /tmp/x   # CPU stand-in
#   PARTS="variants tests" bash benchmarks/gpu_check.sh OUT_DIR   # some parts only
#
# PARTS (default "train variants tests") picks the parts; their limits BENCH_TIMEOUT (330 s),
# VARIANT_TIMEOUT (300 s), TEST_TIMEOUT (150 s) add up to more than one 10-minute command on
# the lent H200: there, run PARTS="train tests" and PARTS=variants as two calls. Each part
# writes its rows as they come (bench.json, variants.json), so a part stopped by its limit
# keeps what it measured.
#
# Needs python3 with torch, numpy, pyarrow (pandas) and, as wheels in .whl/ or installed:
# polars, pydantic, av, kornia (no Prefect, MLflow or DALI: the tests that need them skip).
# polars (55 MB) and av (36 MB) together exceed a 64 MiB transfer: on the lent H200 the polars
# wheels went in a first call (installed to /tmp/site, kept while the machine stays warm), the
# others with this script in a second.
set -u
OUT=${1:-${OUT:-/tmp/gpu-check}}
PARTS=${PARTS:-train variants tests}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  nproc; } > "$OUT/machine.txt"
set -o pipefail
case " $PARTS " in *" train "*)
  timeout "${BENCH_TIMEOUT:-330}" $PY -m benchmarks.train_gpu --json "$OUT/bench.json" \
    ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
  echo "benchmark exit $?";;
esac
case " $PARTS " in *" variants "*)
  timeout "${VARIANT_TIMEOUT:-300}" $PY -m benchmarks.gpu_variants --json "$OUT/variants.json" \
    ${VARIANT_ARGS:-} 2>&1 | tee "$OUT/variants.log"
  echo "variants exit $?";;
esac
case " $PARTS " in *" tests "*)
  timeout "${TEST_TIMEOUT:-150}" $PY -m pytest -m gpu -q -rs -p no:cacheprovider \
    --continue-on-collection-errors tests/ 2>&1 | tee "$OUT/pytest.log" | tail -25
  echo "pytest exit $?";;
esac
