#!/usr/bin/env python3
"""The payment-channel contract's own tests, on py-evm through eth-tester (in process).
Exits 0 when every case passes; prints one line per case and the gas of each call."""
import json
import pathlib
import sys

from eth_abi import encode, decode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from eth_utils import keccak, function_signature_to_4byte_selector as selector

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = json.loads((ROOT / "contracts" / "payment_channel.json").read_text())
ETH = 10**18

t = EthereumTester(PyEVMBackend())
CHAIN_ID = int(t.backend.chain.chain_id)
accounts = t.get_accounts()
keys = t.backend.account_keys
funder, client, provider, stranger = accounts[0], accounts[1], accounts[2], accounts[3]
client_key, stranger_key = keys[1].to_bytes(), keys[3].to_bytes()
h = t.send_transaction({"from": funder, "data": BUILD["bytecode"], "gas": 5_000_000, "value": 0})
CONTRACT = t.get_transaction_receipt(h)["contract_address"]

ABI = {f["name"]: [i["type"] for i in f["inputs"]] for f in BUILD["abi"] if f.get("type") == "function"}


def abi_type(p):
    if p["type"] == "tuple":
        return "(" + ",".join(abi_type(c) for c in p["components"]) + ")"
    return p["type"]


OUTS = {f["name"]: [abi_type(o) for o in f["outputs"]] for f in BUILD["abi"] if f.get("type") == "function"}
gas_log = {}


def calldata(fn, *args):
    types = ABI[fn]
    return "0x" + (selector(f"{fn}({','.join(types)})") + encode(types, list(args))).hex()


def view(fn, *args):
    out = t.call({"from": funder, "to": CONTRACT, "data": calldata(fn, *args)}, "latest")
    raw = bytes.fromhex(out[2:]) if isinstance(out, str) else bytes(out)
    return decode(OUTS[fn], raw)


class Reverted(Exception):
    pass


def send(sender, fn, *args, value=0):
    tx = {"from": sender, "to": CONTRACT, "data": calldata(fn, *args), "value": value, "gas": 500_000}
    try:
        t.call(tx, "latest")
    except TransactionFailed as e:
        raise Reverted(str(e.args[0]) if e.args else "")
    r = t.get_transaction_receipt(t.send_transaction(tx))
    if r["status"] != 1:
        raise Reverted("status 0")
    gas_log.setdefault(fn, r["gas_used"])
    return r


def expect_revert(what, words, fn):
    try:
        fn()
    except Reverted as e:
        if words not in str(e):
            raise AssertionError(f"{what}: reverted with {e!r}, expected '{words}'")
        return
    raise AssertionError(f"{what}: did not revert")


def typed(channel, amount, nonce, chain_id=CHAIN_ID, contract=None):
    return {
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                             {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}],
            "Voucher": [{"name": "channel", "type": "uint256"}, {"name": "chainId", "type": "uint256"},
                        {"name": "amount", "type": "uint256"}, {"name": "nonce", "type": "uint256"}],
        },
        "primaryType": "Voucher",
        "domain": {"name": "gpugrid", "version": "1", "chainId": chain_id, "verifyingContract": contract or CONTRACT},
        "message": {"channel": channel, "chainId": chain_id, "amount": amount, "nonce": nonce},
    }


def voucher(key, channel, amount, nonce, **kw):
    s = Account.sign_message(encode_typed_data(full_message=typed(channel, amount, nonce, **kw)), key)
    return (channel, amount, nonce, s.v, s.r.to_bytes(32, "big"), s.s.to_bytes(32, "big"))


def open_channel(value, timeout=3600):
    r = send(client, "open", provider, timeout, value=value)
    return view("channel_count")[0]


def channel(cid):
    names = ["client", "provider", "deposit", "redeemed", "nonce", "expiry", "closed"]
    return dict(zip(names, view("channels", cid)[0]))


cases = []


def case(f):
    cases.append(f)
    return f


@case
def digest_matches_eip712():
    msg = encode_typed_data(full_message=typed(7, 123, 4))
    want = keccak(b"\x19" + msg.version + msg.header + msg.body)
    assert view("voucher_digest", 7, 123, 4)[0] == want, "contract digest differs from EIP-712"


@case
def redeem_pays_the_difference():
    cid = open_channel(ETH)
    before = t.get_balance(provider)
    send(stranger, "redeem", *voucher(client_key, cid, ETH // 10, 1))   # anyone may submit
    send(stranger, "redeem", *voucher(client_key, cid, ETH // 4, 2))
    assert t.get_balance(provider) - before == ETH // 4, "provider got the wrong amount"
    c = channel(cid)
    assert c["redeemed"] == ETH // 4 and c["nonce"] == 2


@case
def double_redeem_refused():
    cid = open_channel(ETH)
    v = voucher(client_key, cid, 1000, 1)
    send(provider, "redeem", *v)
    expect_revert("same voucher twice", "already redeemed", lambda: send(provider, "redeem", *v))
    send(provider, "redeem", *voucher(client_key, cid, 2000, 5))
    expect_revert("older voucher after a newer one", "already redeemed",
                  lambda: send(provider, "redeem", *voucher(client_key, cid, 3000, 4)))
    expect_revert("newer nonce, no more money", "nothing new",
                  lambda: send(provider, "redeem", *voucher(client_key, cid, 2000, 6)))


@case
def overdraw_refused():
    cid = open_channel(1000)
    expect_revert("voucher above the deposit", "exceeds the deposit",
                  lambda: send(provider, "redeem", *voucher(client_key, cid, 1001, 1)))
    send(client, "deposit", cid, channel(cid)["expiry"], value=1)
    send(provider, "redeem", *voucher(client_key, cid, 1001, 1))


@case
def wrong_signer_refused():
    cid = open_channel(ETH)
    expect_revert("signed by a stranger", "wrong signer",
                  lambda: send(provider, "redeem", *voucher(stranger_key, cid, 10, 1)))
    ch, amount, nonce, v, r, s = voucher(client_key, cid, 10, 1)
    expect_revert("amount changed after signing", "wrong signer",
                  lambda: send(provider, "redeem", ch, amount + 1, nonce, v, r, s))
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    high_s = (n - int.from_bytes(s, "big")).to_bytes(32, "big")
    expect_revert("malleable twin", "malleable", lambda: send(provider, "redeem", ch, amount, nonce, 55 - v, r, high_s))


@case
def cross_channel_and_chain_replay_refused():
    a, b = open_channel(ETH), open_channel(ETH)
    _, amount, nonce, v, r, s = voucher(client_key, a, 100, 1)
    expect_revert("channel a's voucher on b", "wrong signer", lambda: send(provider, "redeem", b, amount, nonce, v, r, s))
    expect_revert("another chain's voucher", "wrong signer",
                  lambda: send(provider, "redeem", *voucher(client_key, a, 100, 1, chain_id=CHAIN_ID + 1)))
    expect_revert("another contract's voucher", "wrong signer",
                  lambda: send(provider, "redeem", *voucher(client_key, a, 100, 1, contract=funder)))


@case
def withdraw_only_after_timeout():
    cid = open_channel(ETH, timeout=600)
    send(provider, "redeem", *voucher(client_key, cid, ETH // 3, 1))
    expect_revert("withdraw before the timeout", "not expired", lambda: send(client, "withdraw", cid))
    expect_revert("withdraw by the provider", "not the client", lambda: send(provider, "withdraw", cid))
    t.time_travel(t.get_block_by_number("latest")["timestamp"] + 601)
    send(provider, "redeem", *voucher(client_key, cid, ETH // 2, 2))  # still redeemable until withdrawn
    before = t.get_balance(client)
    r = send(client, "withdraw", cid)
    fee = r["gas_used"] * r["effective_gas_price"]
    assert t.get_balance(client) - before + fee == ETH - ETH // 2, "wrong refund"
    expect_revert("redeem after withdraw", "closed",
                  lambda: send(provider, "redeem", *voucher(client_key, cid, ETH, 3)))
    expect_revert("withdraw twice", "closed", lambda: send(client, "withdraw", cid))


@case
def deposit_rules():
    cid = open_channel(100)
    exp = channel(cid)["expiry"]
    expect_revert("earlier expiry", "expiry earlier", lambda: send(client, "deposit", cid, exp - 1, value=1))
    expect_revert("deposit by a stranger", "not the client", lambda: send(stranger, "deposit", cid, exp, value=1))
    expect_revert("no such channel", "no such channel", lambda: send(client, "deposit", 999, exp, value=1))
    expect_revert("provider is the client", "provider is the client", lambda: send(client, "open", client, 10, value=1))


@case
def anchor_logs_the_head():
    head = keccak(b"ledger head")
    r = send(client, "anchor", head, 42)
    (log,) = r["logs"]
    assert bytes.fromhex(log["data"][2:]) == head + (42).to_bytes(32, "big")


failed = 0
for f in cases:
    try:
        f()
        print(f"ok   {f.__name__}")
    except Exception as e:  # report every case, then fail
        failed += 1
        print(f"FAIL {f.__name__}: {type(e).__name__}: {e}")
print("gas: " + ", ".join(f"{k} {v}" for k, v in sorted(gas_log.items())))
sys.exit(1 if failed else 0)
