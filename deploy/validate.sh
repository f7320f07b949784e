#!/usr/bin/env bash
# Renders every overlay with kustomize and validates each resource offline
# against the Kubernetes schemas (strict: unknown fields are errors).
set -euo pipefail
cd "$(dirname "$0")/kubernetes/overlays"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for overlay in */; do
  overlay=${overlay%/}
  kubectl kustomize "$overlay" > "$out/$overlay.yaml"
  echo "$overlay: $(grep -c '^kind:' "$out/$overlay.yaml") resources"
  kubernetes-validate --strict --quiet "$out/$overlay.yaml"
done
