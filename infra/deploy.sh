#!/usr/bin/env bash
# Builds and deploys the stack: the two Lambdas (cargo lambda, arm64), the processor image
# (docker buildx, pushed to ECR), then infra/template.yaml with `aws cloudformation
# package` + `deploy`. Idempotent: run it again to update.
#
# Needs: the AWS CLI v2 with credentials for the target account, docker with buildx,
# cargo-lambda (`pip install cargo-lambda`, which bundles zig for cross-compiling).
#
# Usage: infra/deploy.sh --stage STAGE --artifacts-bucket BUCKET [--region REGION]
#                        [--catalog FILE] [--multi-arch] [-- Key=Value ...]
#   --stage             dev, staging, prod…: the stack is redshift-ingest-STAGE
#   --artifacts-bucket  an existing S3 bucket for the Lambda packages
#   --region            default: the AWS CLI's
#   --catalog           the dataset catalog baked into the Lambdas and the image
#                       (default catalog/ecommerce.toml)
#   --multi-arch        also build the image for linux/amd64
#   -- Key=Value        template parameters (VpcId=… SubnetIds=a,b WarehouseUrl=… …);
#                       see infra/README.md
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STAGE=""
ARTIFACTS=""
REGION=""
CATALOG="catalog/ecommerce.toml"
PLATFORMS="linux/arm64"
PARAMETERS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) STAGE="$2"; shift ;;
    --artifacts-bucket) ARTIFACTS="$2"; shift ;;
    --region) REGION="$2"; shift ;;
    --catalog) CATALOG="$2"; shift ;;
    --multi-arch) PLATFORMS="linux/arm64,linux/amd64" ;;
    --) shift; PARAMETERS=("$@"); break ;;
    *) echo "unknown option: $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$STAGE" ] || { echo "--stage is required" >&2; exit 2; }
[ -n "$ARTIFACTS" ] || { echo "--artifacts-bucket is required" >&2; exit 2; }
for tool in aws docker cargo-lambda; do
  command -v "$tool" >/dev/null 2>&1 || { echo "$tool is required (see the header of $0)" >&2; exit 1; }
done

log() { printf '[deploy.sh] %s\n' "$*" >&2; }
cd "$ROOT"
REGION="${REGION:-$(aws configure get region)}"
ACCOUNT="$(aws sts get-caller-identity --query Account --output text)"
STACK="redshift-ingest-$STAGE"
REPOSITORY="redshift-ingest-$STAGE-processor"
TAG="$(git rev-parse --short HEAD 2>/dev/null || date +%Y%m%d%H%M%S)"
REGISTRY="$ACCOUNT.dkr.ecr.$REGION.amazonaws.com"
IMAGE="$REGISTRY/$REPOSITORY:$TAG"

log "checking the catalog $CATALOG"
cargo run --quiet --release -p processor -- check --catalog "$CATALOG"

log "building the Lambdas (arm64)"
cargo lambda build --release --arm64 -p ingest-batch -p ingest-stream
for function in ingest-batch ingest-stream; do
  cp "$CATALOG" "target/lambda/$function/catalog.toml"
done

log "building and pushing $IMAGE ($PLATFORMS)"
aws ecr describe-repositories --region "$REGION" --repository-names "$REPOSITORY" >/dev/null 2>&1 ||
  aws ecr create-repository --region "$REGION" --repository-name "$REPOSITORY" \
    --image-scanning-configuration scanOnPush=true --image-tag-mutability IMMUTABLE \
    --encryption-configuration encryptionType=KMS >/dev/null
aws ecr get-login-password --region "$REGION" | docker login --username AWS --password-stdin "$REGISTRY"
docker buildx build --platform "$PLATFORMS" --build-arg "CATALOG=$CATALOG" -t "$IMAGE" --push .

log "packaging and deploying $STACK"
mkdir -p target/infra
aws cloudformation package --region "$REGION" --template-file infra/template.yaml \
  --s3-bucket "$ARTIFACTS" --s3-prefix "$STACK" --output-template-file target/infra/packaged.yaml
aws cloudformation deploy --region "$REGION" --stack-name "$STACK" \
  --template-file target/infra/packaged.yaml \
  --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND \
  --parameter-overrides "Stage=$STAGE" "ProcessorImage=$IMAGE" "${PARAMETERS[@]}"
aws cloudformation describe-stacks --region "$REGION" --stack-name "$STACK" \
  --query 'Stacks[0].Outputs' --output table
