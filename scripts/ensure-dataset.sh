#!/usr/bin/env bash
# Make sure Debian's Fashion-MNIST files are present; install the package when apt-get is usable.
set -euo pipefail
dir=/usr/share/datasets/fashion-mnist
if [ -f "$dir/train-images-idx3-ubyte.gz" ] && [ -f "$dir/t10k-labels-idx1-ubyte.gz" ]; then
  exit 0
fi
echo "Fashion-MNIST not found in $dir; installing Debian's package dataset-fashion-mnist ..."
if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo=none; fi
if command -v apt-get >/dev/null && [ "$sudo" != none ]; then
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null; }
  [ -f "$dir/train-images-idx3-ubyte.gz" ] && { echo "installed $dir"; exit 0; }
fi
cat >&2 <<MSG
error: Fashion-MNIST is missing and could not be installed automatically.
Do one of:
  - on Debian/Ubuntu, as root:  apt-get install -y dataset-fashion-mnist
  - copy the four files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
    t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz into a folder and set data.root to it
    in params.yaml (and SHRINK_SKIP_DATASET_CHECK=1 to skip this check)
  - or point the pipeline at your own images: data.source: folder, data.root: /path/to/food-11
MSG
[ "${SHRINK_SKIP_DATASET_CHECK:-0}" = 1 ] && exit 0
exit 1
