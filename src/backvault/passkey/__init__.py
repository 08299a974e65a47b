"""Passkey key slots: WebAuthn PRF in a browser and FIDO2 hmac-secret from the command line."""
