# Sourced by main.sh and motion.sh: make Fashion-MNIST available offline from Debian's package when
# possible; otherwise set FASHION_MNIST_DOWNLOAD=1 so the job downloads it (checksums verified).
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] && [ ! -d "${LOOKUPVIT_FASHION_MNIST:-/nonexistent}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    FASHION_MNIST_DOWNLOAD=1
  fi
fi
