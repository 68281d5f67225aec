"""Mints tokens with PyJWT, an implementation independent of the server's,
for tests/it/auth.rs: prints them as one JSON object.

usage: pyjwt_tokens.py SECRET DIR  (writes DIR/es256.pub.pem)
"""
import json
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

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

no_exp = claims("reader")
del no_exp["exp"]
tokens = {
    "hs_writer": jwt.encode(claims("writer"), secret, algorithm="HS256"),
    "hs_reader": jwt.encode(claims("reader"), secret, algorithm="HS256"),
    "hs_expired": jwt.encode(claims("reader", exp=now - 3600), secret, algorithm="HS256"),
    "hs_wrong_secret": jwt.encode(claims("reader"), secret + "x", algorithm="HS256"),
    "hs_wrong_audience": jwt.encode(claims("reader", aud="other"), secret, algorithm="HS256"),
    "hs_no_exp": jwt.encode(no_exp, secret, algorithm="HS256"),
    "es_reader": jwt.encode(claims("reader"), key, algorithm="ES256", headers={"kid": "k1"}),
    "es_other_key": jwt.encode(claims("reader"), other, algorithm="ES256", headers={"kid": "k1"}),
}
print(json.dumps(tokens))
