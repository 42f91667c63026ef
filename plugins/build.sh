#!/usr/bin/env bash
# Builds every plugin for wasm32-wasip1 (release) and refreshes dist/: <plugin>.wasm and SHA256SUMS.
#
#   plugins/build.sh           rebuild and copy into dist/
#   plugins/build.sh --check   rebuild and fail if dist/ differs (CI: the committed modules match the sources)
#
# Needs: the toolchain of rust-toolchain.toml and `rustup target add wasm32-wasip1`. Network: crates.io only,
# and only when Cargo.lock's crates are not in the local cache yet. Idempotent.
set -euo pipefail

cd "$(dirname "$0")"
PLUGINS=(basic-auth rate-limit header-append hostcalls hostile headers-abi010)
TARGET=wasm32-wasip1
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
CHECK=0
[[ "${1:-}" == "--check" ]] && CHECK=1

if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
  echo "build.sh: the $TARGET target is missing: rustup target add $TARGET" >&2
  exit 1
fi

# Panic messages embed source paths: map them to fixed prefixes so the bytes do not depend on who built them.
REGISTRY="${CARGO_HOME:-$HOME/.cargo}/registry/src"
export RUSTFLAGS="--remap-path-prefix=$REGISTRY=/cargo/registry/src --remap-path-prefix=$PWD=/plugins ${RUSTFLAGS:-}"

packages=()
for p in "${PLUGINS[@]}"; do packages+=(-p "$p"); done
cargo build --locked --release --target "$TARGET" "${packages[@]}"

out=dist
if (( CHECK )); then
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out"
for p in "${PLUGINS[@]}"; do
  cp "$TARGET_DIR/$TARGET/release/${p//-/_}.wasm" "$out/$p.wasm"
done
(cd "$out" && sha256sum "${PLUGINS[@]/%/.wasm}" > SHA256SUMS)

if (( CHECK )); then
  if diff -u dist/SHA256SUMS "$out/SHA256SUMS"; then
    echo "build.sh: dist/ matches the sources"
  else
    echo "build.sh: dist/ is stale; run plugins/build.sh and commit dist/" >&2
    exit 1
  fi
else
  ls -l dist/*.wasm
fi
