# Helpers the cluster shell tests share (sourced; they need $PY).

# wait_for SECONDS CMD...: poll until CMD succeeds (bounded).
wait_for() {
	local t=$1; shift
	for _ in $(seq $((t * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
	return 1
}

# mk FILE BYTES: a safetensors file of one random U8 tensor.
mk() {
	$PY - "$1" "$2" <<'PYEOF'
import json, os, struct, sys
n = int(sys.argv[2])
h = json.dumps({"x": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
h += b" " * (-len(h) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + os.urandom(n))
PYEOF
}
