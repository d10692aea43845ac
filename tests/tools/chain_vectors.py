#!/usr/bin/env python3
"""Writes chain/testdata/vectors.json: known answers for the C++ chain code, computed with the
reference Python implementations (eth-hash/pycryptodome Keccak, eth-keys, eth-utils EIP-55,
the rlp package, eth-abi, eth-account's EIP-712 and EIP-1559 signing). Deterministic: keys
come from a fixed seed. Usage: chain_vectors.py [OUT]"""
import json
import pathlib
import random
import sys

import rlp
from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_keys import keys
from eth_utils import keccak, to_checksum_address, function_signature_to_4byte_selector

rng = random.Random(17)
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def rand_bytes(n):
    return bytes(rng.getrandbits(8) for _ in range(n))


def rand_key():
    return (rng.randrange(1, N)).to_bytes(32, "big")


out = {}
out["keccak"] = [{"in": m.hex(), "out": keccak(m).hex()}
                 for m in [b"", b"abc", b"a" * 135, b"a" * 136, b"a" * 137, rand_bytes(1000)]]

out["keys"] = []
for k in [(1).to_bytes(32, "big"), (N - 1).to_bytes(32, "big")] + [rand_key() for _ in range(4)]:
    pk = keys.PrivateKey(k)
    digest = keccak(rand_bytes(40))
    sig = pk.sign_msg_hash(digest)
    out["keys"].append({"secret": k.hex(), "public": pk.public_key.to_bytes().hex(),
                        "address": pk.public_key.to_checksum_address(), "digest": digest.hex(),
                        "r": sig.r.to_bytes(32, "big").hex(), "s": sig.s.to_bytes(32, "big").hex(), "v": sig.v})

out["eip55"] = [to_checksum_address("0x" + rand_bytes(20).hex()) for _ in range(8)] + [
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB", "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb"]


def item_json(x):
    if isinstance(x, int):
        return {"u": str(x)}
    if isinstance(x, bytes):
        return {"b": x.hex()}
    return {"l": [item_json(i) for i in x]}


rlp_items = [0, 1, 127, 128, 255, 256, 2**64, 2**256 - 1, b"", b"\x00", b"\x7f", b"\x80", b"dog",
             b"x" * 55, b"x" * 56, rand_bytes(1024), [], [b"cat", b"dog"], [[], [[]], [[], [[]]]],
             [b"y" * 60, [1, 2, 3], 1024]]
out["rlp"] = [{"item": item_json(x), "out": rlp.encode(x).hex()} for x in rlp_items]

addr = "0x" + rand_bytes(20).hex()
out["abi"] = []
for sig, types, args in [
    ("transfer(address,uint256)", ["address", "uint256"], [addr, 10**18]),
    ("f(uint256,bool,bytes32)", ["uint256", "bool", "bytes32"], [2**256 - 1, True, b"\x11" * 32]),
    ("g(bytes,uint256,string)", ["bytes", "uint256", "string"], [rand_bytes(33), 7, "gpugrid"]),
    ("h(string,bytes)", ["string", "bytes"], ["", b""]),
]:
    data = function_signature_to_4byte_selector(sig) + encode(types, args)
    out["abi"].append({"signature": sig, "types": types,
                       "args": [a if isinstance(a, str) else (a.hex() if isinstance(a, bytes) else (a if isinstance(a, bool) else str(a))) for a in args],
                       "out": data.hex()})

contract = to_checksum_address("0x" + rand_bytes(20).hex())
out["vouchers"] = []
for channel, chain_id, amount, nonce in [(1, 1, 10**15, 1), (7, 131277322940537, 123456789, 42), (2**64, 137, 2**200, 2**70)]:
    k = rand_key()
    typed = {
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                             {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}],
            "Voucher": [{"name": "channel", "type": "uint256"}, {"name": "chainId", "type": "uint256"},
                        {"name": "amount", "type": "uint256"}, {"name": "nonce", "type": "uint256"}],
        },
        "primaryType": "Voucher",
        "domain": {"name": "gpugrid", "version": "1", "chainId": chain_id, "verifyingContract": contract},
        "message": {"channel": channel, "chainId": chain_id, "amount": amount, "nonce": nonce},
    }
    msg = encode_typed_data(full_message=typed)
    s = Account.sign_message(msg, k)
    out["vouchers"].append({"secret": k.hex(), "contract": contract, "channel": str(channel), "chain_id": str(chain_id),
                            "amount": str(amount), "nonce": str(nonce), "domain_separator": msg.header.hex(),
                            "struct_hash": msg.body.hex(), "digest": keccak(b"\x19" + msg.version + msg.header + msg.body).hex(),
                            "r": s.r.to_bytes(32, "big").hex(), "s": s.s.to_bytes(32, "big").hex(), "v": s.v})

out["transactions"] = []
for to, value, data, nonce in [(contract, 10**18, b"", 0), (contract, 0, rand_bytes(68), 5), (None, 0, rand_bytes(300), 2**40)]:
    k = rand_key()
    tx = {"type": 2, "chainId": 131277322940537, "nonce": nonce, "maxPriorityFeePerGas": 10**9,
          "maxFeePerGas": 3 * 10**10 + 7, "gas": 210000, "value": value, "data": "0x" + data.hex(), "accessList": []}
    if to:
        tx["to"] = to
    signed = Account.sign_transaction(tx, k)
    out["transactions"].append({"secret": k.hex(), "chain_id": str(tx["chainId"]), "nonce": str(nonce),
                                "max_priority_fee_per_gas": str(tx["maxPriorityFeePerGas"]),
                                "max_fee_per_gas": str(tx["maxFeePerGas"]), "gas_limit": str(tx["gas"]),
                                "to": to or "", "value": str(value), "data": data.hex(),
                                "raw": signed.raw_transaction.hex(), "hash": signed.hash.hex()})

target = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parents[2] / "chain" / "testdata" / "vectors.json"
target.write_text(json.dumps(out, indent=1) + "\n")
print(f"chain_vectors.py: wrote {target}")
