#!/usr/bin/env python3
"""Gas per job of the payment-channel contract when a provider redeems every N jobs.

On py-evm through eth-tester (in process): a client opens a channel, pays JOBS jobs with one
cumulative voucher each, and the provider redeems the latest voucher after every N jobs.
Prints a Markdown table: N, redeem transactions, total redeem gas, gas per job (redeems only,
and with the channel's open and withdraw shared over the jobs).
Usage: chain_gas.py [--jobs 100] [--every 1,10,25,100]"""
import argparse
import json
import pathlib

from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_tester import EthereumTester, PyEVMBackend
from eth_utils import function_signature_to_4byte_selector as selector

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUILD = json.loads((ROOT / "contracts" / "payment_channel.json").read_text())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--every", default="1,10,25,100")
    a = ap.parse_args()
    t = EthereumTester(PyEVMBackend())
    chain_id = int(t.backend.chain.chain_id)
    acc = t.get_accounts()
    client, provider = acc[1], acc[2]
    key = t.backend.account_keys[1].to_bytes()
    h = t.send_transaction({"from": acc[0], "data": BUILD["bytecode"], "gas": 5_000_000, "value": 0})
    contract = t.get_transaction_receipt(h)["contract_address"]

    def tx(sender, sig, types, args, value=0):
        data = "0x" + (selector(sig) + encode(types, args)).hex()
        r = t.get_transaction_receipt(t.send_transaction(
            {"from": sender, "to": contract, "data": data, "value": value, "gas": 500_000}))
        assert r["status"] == 1, sig
        return r["gas_used"]

    def voucher(channel, amount, nonce):
        typed = {"types": {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                                            {"name": "chainId", "type": "uint256"},
                                            {"name": "verifyingContract", "type": "address"}],
                           "Voucher": [{"name": "channel", "type": "uint256"}, {"name": "chainId", "type": "uint256"},
                                       {"name": "amount", "type": "uint256"}, {"name": "nonce", "type": "uint256"}]},
                 "primaryType": "Voucher",
                 "domain": {"name": "gpugrid", "version": "1", "chainId": chain_id, "verifyingContract": contract},
                 "message": {"channel": channel, "chainId": chain_id, "amount": amount, "nonce": nonce}}
        s = Account.sign_message(encode_typed_data(full_message=typed), key)
        return [channel, amount, nonce, s.v, s.r.to_bytes(32, "big"), s.s.to_bytes(32, "big")]

    price = 10**12
    print(f"| redeem every N jobs | redeems | redeem gas | gas/job (redeems) | gas/job (with open + withdraw) |")
    print(f"|---:|---:|---:|---:|---:|")
    for n in [int(x) for x in a.every.split(",")]:
        open_gas = tx(client, "open(address,uint256)", ["address", "uint256"], [provider, 0], value=a.jobs * price)
        # the channel just opened is the latest one
        out = t.call({"from": client, "to": contract, "data": "0x" + selector("channel_count()").hex()}, "latest")
        channel = int(out, 16) if isinstance(out, str) else int.from_bytes(out, "big")
        redeem_gas, redeems = 0, 0
        for job in range(1, a.jobs + 1):
            if job % n == 0 or job == a.jobs:
                redeem_gas += tx(provider, "redeem(uint256,uint256,uint256,uint8,bytes32,bytes32)",
                                 ["uint256", "uint256", "uint256", "uint8", "bytes32", "bytes32"],
                                 voucher(channel, job * price, job))
                redeems += 1
        withdraw_gas = tx(client, "withdraw(uint256)", ["uint256"], [channel])
        print(f"| {n} | {redeems} | {redeem_gas} | {redeem_gas / a.jobs:.0f} | "
              f"{(redeem_gas + open_gas + withdraw_gas) / a.jobs:.0f} |")


if __name__ == "__main__":
    main()
