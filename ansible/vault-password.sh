#!/bin/sh
# Ansible vault password source: prints $QUAYSIDE_VAULT_PASSWORD.
#   QUAYSIDE_VAULT_PASSWORD=... ansible-playbook ... --vault-password-file vault-password.sh
# Keep the real password in a password manager (e.g. QUAYSIDE_VAULT_PASSWORD="$(pass show quayside/vault)").
# The example inventory's vault uses the throwaway password "quayside-example-vault" (docs/deploy.md).
if [ -z "${QUAYSIDE_VAULT_PASSWORD:-}" ]; then
    echo "vault-password.sh: set QUAYSIDE_VAULT_PASSWORD (the example inventory's is quayside-example-vault)" >&2
    exit 1
fi
printf '%s\n' "$QUAYSIDE_VAULT_PASSWORD"
