"""Two external identity providers and a legacy shared-secret issuer, as an
independent JWT library (PyJWT) produces their keys and tokens: one shaped
like Auth0 (issuer with a trailing slash, RS256 and PS256, `aud` a list,
RBAC `permissions`, no `jti`) and one like Keycloak (no trailing slash,
ES256 and EdDSA, an encryption key beside the signing keys, `jti`).

Usage: idp.py BASE_URL LEGACY_SECRET_FILE AUDIENCE
Prints {"issuers": {...}, "jwks": {...}, "tokens": {name: token}}; the
users' tokens are for AUDIENCE.
"""
import base64, hashlib, hmac, json, secrets, sys, time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

base, secret_file, audience = sys.argv[1], sys.argv[2], sys.argv[3]
now = int(time.time())
AUTH0 = base + "/auth0/"
KEYCLOAK = base + "/realms/demo"
LEGACY = "https://legacy.example"


def rsa_key(bits=2048):
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def jwk(private, kid, alg, use="sig"):
    public = private.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        doc = RSAAlgorithm.to_jwk(public)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        doc = ECAlgorithm.to_jwk(public)
    else:
        doc = OKPAlgorithm.to_jwk(public)
    doc = json.loads(doc) if isinstance(doc, str) else dict(doc)
    doc.update(kid=kid, alg=alg, use=use)
    return doc


auth0_rs, auth0_ps, auth0_shared = rsa_key(), rsa_key(), rsa_key()
kc_es = ec.generate_private_key(ec.SECP256R1())
kc_ed = ed25519.Ed25519PrivateKey.generate()
kc_shared, kc_enc, kc_weak = rsa_key(), rsa_key(), rsa_key(1024)

jwks = {
    "auth0": {"keys": [jwk(auth0_rs, "auth0-rs", "RS256"), jwk(auth0_ps, "auth0-ps", "PS256"),
                       jwk(auth0_shared, "shared", "RS256")]},
    "keycloak": {"keys": [jwk(kc_es, "kc-es", "ES256"), jwk(kc_ed, "kc-ed", "EdDSA"),
                          jwk(kc_shared, "shared", "RS256"),
                          jwk(kc_enc, "kc-enc", "RSA-OAEP", use="enc"),
                          jwk(kc_weak, "kc-weak", "RS256")]},
}


def auth0_claims(**over):
    claims = {"iss": AUTH0, "sub": "auth0|alice", "aud": [audience, AUTH0 + "userinfo"],
              "iat": now, "exp": now + 600, "azp": "spa", "scope": "openid profile",
              "permissions": ["inventory.read"]}
    claims.update(over)
    return claims


def keycloak_claims(**over):
    claims = {"iss": KEYCLOAK, "sub": "f81d4fae-7dec-11d0-a765-00a0c91e6bf6", "aud": audience,
              "typ": "Bearer", "azp": "web", "scope": "openid inventory.read",
              "jti": secrets.token_hex(16), "iat": now, "exp": now + 300}
    claims.update(over)
    return claims


def sign(claims, key, alg, kid, **headers):
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, **headers})


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_raw(claims, secret, header):
    """HS256 by hand: PyJWT rightly refuses a PEM public key as an HMAC secret."""
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(mac)


def rs256_raw(claims, key, kid):
    """RS256 by hand, for a key PyJWT may refuse to sign with (1024 bits)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    header = {"alg": "RS256", "typ": "JWT", "kid": kid}
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64(signature)


legacy_secret = secrets.token_urlsafe(48).encode()
with open(secret_file, "wb") as f:
    f.write(legacy_secret + b"\n")
legacy = {"iss": LEGACY, "sub": "legacy-user", "aud": audience, "iat": now,
          "exp": now + 600, "scope": "inventory.read"}
kc_public_pem = kc_shared.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

tokens = {
    # Accepted.
    "auth0_rs256": sign(auth0_claims(), auth0_rs, "RS256", "auth0-rs"),
    "auth0_ps256": sign(auth0_claims(), auth0_ps, "PS256", "auth0-ps"),
    "auth0_short_lived": sign(auth0_claims(exp=now + 90), auth0_rs, "RS256", "auth0-rs"),
    "auth0_orders_writer": sign(auth0_claims(permissions=["orders.write"]), auth0_rs, "RS256",
                                "auth0-rs"),
    "keycloak_es256": sign(keycloak_claims(), kc_es, "ES256", "kc-es"),
    "keycloak_eddsa": sign(keycloak_claims(), kc_ed, "EdDSA", "kc-ed"),
    "keycloak_orders_writer": sign(keycloak_claims(scope="openid orders.write"), kc_es, "ES256",
                                   "kc-es"),
    "legacy_hs256": jwt.encode(legacy, legacy_secret, algorithm="HS256"),
    # Issuer mix-ups.
    "same_kid_other_issuer": sign(auth0_claims(), kc_shared, "RS256", "shared"),
    "kid_of_other_issuer": sign(auth0_claims(), kc_es, "ES256", "kc-es"),
    "trailing_slash": sign(keycloak_claims(iss=KEYCLOAK + "/"), kc_es, "ES256", "kc-es"),
    "issuer_case": sign(keycloak_claims(iss=KEYCLOAK.replace("localhost", "LOCALHOST")),
                        kc_es, "ES256", "kc-es"),
    "untrusted_issuer": sign(auth0_claims(iss="https://evil.example/"), auth0_rs, "RS256",
                             "auth0-rs"),
    # Keys and algorithms.
    "weak_key": rs256_raw(keycloak_claims(), kc_weak, "kc-weak"),
    "encryption_key": sign(keycloak_claims(), kc_enc, "RS256", "kc-enc"),
    "alg_none": jwt.encode(keycloak_claims(), None, algorithm="none"),
    "hs256_with_public_key": hs256_raw(keycloak_claims(), kc_public_pem,
                                       {"alg": "HS256", "typ": "JWT", "kid": "shared"}),
    "legacy_rs256": sign(legacy, auth0_rs, "RS256", "auth0-rs"),
    "jku_header": sign(auth0_claims(), auth0_rs, "RS256", "auth0-rs",
                       jku=base + "/evil/jwks.json"),
    # Claims.
    "wrong_audience": sign(auth0_claims(aud=["billing"]), auth0_rs, "RS256", "auth0-rs"),
    "forged_act": sign(auth0_claims(act={"sub": "spiffe://authmesh.local/orders"}), auth0_rs,
                       "RS256", "auth0-rs"),
    "expired": sign(auth0_claims(iat=now - 900, exp=now - 300), auth0_rs, "RS256", "auth0-rs"),
    "too_long": sign(auth0_claims(exp=now + 2 * 86400), auth0_rs, "RS256", "auth0-rs"),
    "no_jti_at_keycloak": sign({k: v for k, v in keycloak_claims().items() if k != "jti"},
                               kc_es, "ES256", "kc-es"),
    "permission_missing": sign(auth0_claims(permissions=["orders.write"]), auth0_rs, "RS256",
                               "auth0-rs"),
}
print(json.dumps({"issuers": {"auth0": AUTH0, "keycloak": KEYCLOAK, "legacy": LEGACY},
                  "jwks": jwks, "tokens": tokens}))
