# Sourced by the lent-GPU scripts (gpu_suite.sh, gpu_full_run.sh) from the
# repository root, after they set OUT and define log(): installs the carried
# wheels (.whl/: what the machine's image lacks, see benchmarks/README.md)
# into runs/gpu_site (git-ignored), puts them and the repository on the
# path, and logs the device and package versions. SKIP_INSTALL=1 skips the
# install (a local dry run with PY=<venv python>).
# Budget helpers (scripts that set T0 and BUDGET_S): seconds left, and a
# stage's timeout leaving $1 seconds for what follows (at least 10).
left() { echo $(( BUDGET_S - ($(date +%s) - T0) )); }
limit() { local t=$(( $(left) - $1 )); echo $(( t > 10 ? t : 10 )); }
PY=${PY:-python3}
SITE=$PWD/runs/gpu_site
if [ -z "${SKIP_INSTALL:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$SITE" .whl/*.whl || exit 1
fi
export PYTHONPATH=$SITE:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm \
  --format=csv 2>&1 | log
$PY -c "import jax, flax, optax, orbax.checkpoint, grain; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())" 2>&1 | log
