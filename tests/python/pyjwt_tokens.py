"""Mints tokens with PyJWT, an implementation independent of the server's,
for tests/it/auth.rs: prints them as one JSON object.

usage: pyjwt_tokens.py SECRET DIR  (writes DIR/es256.pub.pem and DIR/jwks.json)
"""
import json
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

secret, out_dir = sys.argv[1], sys.argv[2]
now = int(time.time())


def claims(role, **extra):
    c = {"tenant": "acme", "role": role, "aud": "allsource", "exp": now + 600, "iat": now}
    c.update(extra)
    return c


key = ec.generate_private_key(ec.SECP256R1())
other = ec.generate_private_key(ec.SECP256R1())
with open(f"{out_dir}/es256.pub.pem", "wb") as f:
    f.write(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

# A JWKS with two RSA keys, as an identity provider publishes them.
rsa_keys = {kid: rsa.generate_private_key(public_exponent=65537, key_size=2048) for kid in ("rk1", "rk2")}
jwks = {"keys": []}
for kid, k in rsa_keys.items():
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(k.public_key()))
    jwk.update({"kid": kid, "alg": "RS256", "use": "sig"})
    jwks["keys"].append(jwk)
with open(f"{out_dir}/jwks.json", "w") as f:
    json.dump(jwks, f)

no_exp = claims("reader")
del no_exp["exp"]
tokens = {
    "hs_writer": jwt.encode(claims("writer"), secret, algorithm="HS256"),
    "hs_reader": jwt.encode(claims("reader"), secret, algorithm="HS256"),
    "hs_expired": jwt.encode(claims("reader", exp=now - 3600), secret, algorithm="HS256"),
    "hs_wrong_secret": jwt.encode(claims("reader"), secret + "x", algorithm="HS256"),
    "hs_wrong_audience": jwt.encode(claims("reader", aud="other"), secret, algorithm="HS256"),
    "hs_no_exp": jwt.encode(no_exp, secret, algorithm="HS256"),
    # RFC 7519 allows "aud" to be an array: ours among others is accepted.
    "hs_aud_array": jwt.encode(
        claims("reader", aud=["other", "allsource"]), secret, algorithm="HS256"
    ),
    "hs_aud_array_without_ours": jwt.encode(
        claims("reader", aud=["other", "another"]), secret, algorithm="HS256"
    ),
    "es_reader": jwt.encode(claims("reader"), key, algorithm="ES256", headers={"kid": "k1"}),
    "es_other_key": jwt.encode(claims("reader"), other, algorithm="ES256", headers={"kid": "k1"}),
    "rs_rk1": jwt.encode(claims("reader"), rsa_keys["rk1"], algorithm="RS256", headers={"kid": "rk1"}),
    "rs_rk2": jwt.encode(claims("reader"), rsa_keys["rk2"], algorithm="RS256", headers={"kid": "rk2"}),
    "rs_rk1_signed_by_rk2": jwt.encode(
        claims("reader"), rsa_keys["rk2"], algorithm="RS256", headers={"kid": "rk1"}
    ),
}
print(json.dumps(tokens))
