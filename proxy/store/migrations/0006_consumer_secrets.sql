-- modgate 0006: signed requests for API consumers (EM-33; docs/authentication.md, "Signed
-- requests"). The seed's api_secret_hash cannot verify an HMAC: the gateway needs the secret
-- itself. It is stored encrypted with AES-256-GCM under the `secrets_key` setting
-- (proxy/auth/secret_box.py: a 12-byte nonce, then the ciphertext and its tag; the consumer's
-- id is the associated data, so a ciphertext copied onto another row does not decrypt), never
-- in plain text; api_secret_hash stays unused.
--
-- require_signature: a request without a valid signature is refused (401).
-- Both columns take part in the update trigger of 0005 (it compares whole rows), so setting
-- them NOTIFies `consumer:<key_hash>` and every gateway reloads the consumer.

ALTER TABLE module_api_consumers
  ADD COLUMN IF NOT EXISTS secret_ciphertext BYTEA,
  ADD COLUMN IF NOT EXISTS require_signature BOOLEAN NOT NULL DEFAULT false;
