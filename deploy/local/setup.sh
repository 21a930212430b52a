#!/usr/bin/env bash
# Idempotent machine setup for citystream's local stack and tests; each step skips what is there.
#   1. Debian packages (Mosquitto, Tesseract + Thai data, Thai fonts (TLWG and FreeSerif for training, Noto and Arundina held
#      out for the plate evaluation renderer), Java 17, Maven, Prometheus for promtool,
#      Chromium for the console's browser tests: Playwright drives /usr/bin/chromium, it downloads no browser)
#   2. .venv with citystream installed editable (+ dev tools); redone when pyproject.toml changes
#   3. Apache Kafka broker jars from Maven Central into .cache/kafka (deploy/local/pom.xml)
#   4. helm (not a Debian package) built with `go install` into .cache/bin, for the chart tests
set -euo pipefail
cd "$(dirname "$0")/../.."

APT_PACKAGES="mosquitto mosquitto-clients tesseract-ocr tesseract-ocr-tha tesseract-ocr-eng fonts-thai-tlwg
 fonts-freefont-ttf fonts-noto-core fonts-arundina libgl1 libglib2.0-0 openjdk-17-jre-headless maven prometheus chromium"
PYTHON="${PYTHON:-python3}"

missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# Java 17 and Maven may come from elsewhere than Debian (e.g. a preinstalled JDK): accept them.
if command -v java >/dev/null && java -version 2>&1 | grep -qE 'version "(1[7-9]|2[0-9])'; then
  missing=$(echo "$missing" | sed 's/ openjdk-17-jre-headless//')
fi
if command -v mvn >/dev/null; then missing=$(echo "$missing" | sed 's/ maven//'); fi
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages:$missing"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

stamp=".venv/.citystream-installed"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: creating .venv and installing citystream (editable) with dev tools"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi

kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' deploy/local/pom.xml)
if [ ! -f ".cache/kafka/kafka_2.13-${kafka_version}.jar" ]; then
  echo "setup: fetching Apache Kafka ${kafka_version} broker jars from Maven Central"
  rm -rf .cache/kafka
  mvn -q -B -f deploy/local/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$PWD/.cache/kafka"
fi
HELM_VERSION="v3.21.4"
if [ ! -x .cache/bin/helm ] || ! .cache/bin/helm version --template '{{.Version}}' 2>/dev/null | grep -q "^v3\.21"; then
  command -v go >/dev/null || { echo "setup: go is needed to build helm (Debian golang-go, or the machine's Go)" >&2; exit 1; }
  echo "setup: building helm ${HELM_VERSION} with go install into .cache/bin (a few minutes, once)"
  mkdir -p .cache/bin
  GOBIN="$PWD/.cache/bin" GOFLAGS=-buildvcs=false go install "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
fi
echo "setup: ok"
