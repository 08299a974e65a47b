"""Cryptographic building blocks: keys, authenticated encryption and the recovery key."""
