#!/bin/sh
# Writes the secrets docker/compose.yaml requires, at random, to docker/.env (mode 0600,
# git-ignored), which Compose reads for `docker compose -f docker/compose.yaml ...`.
#   sh docker/make-secrets.sh [ENV_FILE]
# A secret already in the file is kept (Postgres and MLflow keep the first password they
# are given), so running it again only adds what is missing; one set in the environment
# (SEEKFORGE_ADMIN_PASSWORD=... sh docker/make-secrets.sh) is used instead of a random one.
# Random values are letters, digits, - and _ (safe in a URL); a given one with other
# characters is written in single quotes (literal to Compose). Nothing secret is printed.
set -eu

env_file=${1:-$(dirname "$0")/.env}
umask 077

# n random bytes, base64url: 24 bytes -> 32 characters without padding
random() { head -c "$1" /dev/urandom | base64 | tr -d '\n=' | tr '+/' '-_'; }
# a Fernet key, what Airflow's fernet_key must be: 32 bytes, base64url with its padding
fernet_key() { head -c 32 /dev/urandom | base64 | tr -d '\n' | tr '+/' '-_'; }

# an admin password given in the environment: MLflow's rule, 12 characters or more
for name in SEEKFORGE_ADMIN_PASSWORD MLFLOW_ADMIN_PASSWORD; do
    eval "value=\${$name:-}"
    if [ -n "$value" ] && [ ${#value} -lt 12 ]; then
        echo "make-secrets: $name: ${#value} characters; at least 12 are needed" >&2
        exit 2
    fi
done
for name in POSTGRES_PASSWORD AIRFLOW_JWT_SECRET AIRFLOW_FERNET_KEY SEEKFORGE_ADMIN_PASSWORD \
            MLFLOW_ADMIN_PASSWORD MLFLOW_FLASK_SECRET_KEY; do
    eval "value=\${$name:-}"
    case $value in
        *"'"*|*"
"*) echo "make-secrets: $name: a quote (') or a line break cannot go into $env_file" >&2
            exit 2 ;;
    esac
done

touch "$env_file"
case $(ls -l "$env_file") in
    -rw-------*) ;;
    *) echo "make-secrets: $env_file was open to others; now mode 0600" >&2 ;;
esac
chmod 600 "$env_file"

added=""
for name in POSTGRES_PASSWORD AIRFLOW_JWT_SECRET AIRFLOW_FERNET_KEY SEEKFORGE_ADMIN_PASSWORD \
            MLFLOW_ADMIN_PASSWORD MLFLOW_FLASK_SECRET_KEY; do
    if grep -q "^$name=." "$env_file"; then
        continue
    fi
    eval "value=\${$name:-}"
    if [ -z "$value" ]; then
        case $name in
            AIRFLOW_FERNET_KEY) value=$(fernet_key) ;;
            *) value=$(random 24) ;;
        esac
    fi
    # drop an empty NAME= line (grep, not sed -i: the same on Linux and macOS), add the value
    grep -v "^$name=\$" "$env_file" > "$env_file.tmp" || true
    mv "$env_file.tmp" "$env_file"
    case $value in
        *[!A-Za-z0-9_=-]*) printf "%s='%s'\n" "$name" "$value" >> "$env_file" ;;  # literal to Compose
        *) printf '%s=%s\n' "$name" "$value" >> "$env_file" ;;
    esac
    added="$added $name"
done

echo "make-secrets: $env_file (mode 0600) holds the secrets of docker/compose.yaml;" \
     "added:${added:- none}"
echo "make-secrets: log in as admin with SEEKFORGE_ADMIN_PASSWORD (Airflow) and" \
     "MLFLOW_ADMIN_PASSWORD (MLflow) from that file"
