#!/usr/bin/env python3
"""A local EVM development chain for the tests: py-evm through eth-tester behind a small
Ethereum JSON-RPC server over HTTP on a loopback port.

    devchain.py --port 0 --ready FILE [--chain-id-lie N] [--tls-cert PEM --tls-key PEM]

On start it deploys contracts/payment_channel.json from prefunded account 0 and writes one JSON
line to --ready: {"url", "chain_id", "contract", "funder"}. It serves until SIGTERM/SIGINT.
Transactions are mined at once (one block each).

Standard methods: eth_chainId, net_version, eth_blockNumber, eth_getBalance,
eth_getTransactionCount, eth_gasPrice, eth_maxPriorityFeePerGas, eth_getBlockByNumber,
eth_estimateGas, eth_call, eth_sendRawTransaction, eth_getTransactionReceipt, eth_getLogs.
Test-only methods: dev_fund(address, wei_hex) sends from the funder; dev_increaseTime(seconds)
mines a block that many seconds later; dev_fault(mode, count[, method]) misbehaves on the next
`count` requests (of that JSON-RPC method only, when one is named): "malformed" (a body that is not JSON), "http500", "slow" (answers after 2 s),
"drop" (closes the connection without answering), "wrong_chain" (eth_chainId lies).
"""
import argparse
import ast
import json
import pathlib
import signal
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed, TransactionNotFound

ROOT = pathlib.Path(__file__).resolve().parents[2]


def hx(n):
    return hex(int(n))


def to_int(v):
    if isinstance(v, int):
        return v
    return int(v, 16) if isinstance(v, str) and v.startswith("0x") else int(v)


def block_id(v):
    if v is None or v in ("latest", "pending", "earliest", "safe", "finalized"):
        return "latest" if v in (None, "safe", "finalized") else v
    return to_int(v)


def revert_message(data):
    if isinstance(data, Exception) and data.args:  # py-evm's Revert(bytes) from estimate_gas
        data = data.args[0]
    if isinstance(data, str) and data[:2] in ("b'", 'b"'):  # eth-tester passes repr(bytes)
        try:
            data = ast.literal_eval(data)
        except (ValueError, SyntaxError):
            pass
    if isinstance(data, (bytes, bytearray)):
        raw = bytes(data)
    elif isinstance(data, str) and data.startswith("0x"):
        raw = bytes.fromhex(data[2:])
    else:
        return str(data), "0x"
    if raw[:4] == bytes.fromhex("08c379a0") and len(raw) >= 68:
        n = int.from_bytes(raw[36:68], "big")
        return raw[68:68 + n].decode("utf-8", "replace"), "0x" + raw.hex()
    return "", "0x" + raw.hex()


class RpcError(Exception):
    def __init__(self, code, message, data=None):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


class Chain:
    def __init__(self, lie_chain_id=None):
        self.lock = threading.Lock()
        self.t = EthereumTester(PyEVMBackend())
        self.chain_id = int(self.t.backend.chain.chain_id)
        self.lie_chain_id = lie_chain_id
        self.funder = self.t.get_accounts()[0]
        build = json.loads((ROOT / "contracts" / "payment_channel.json").read_text())
        h = self.t.send_transaction({"from": self.funder, "data": build["bytecode"], "gas": 5_000_000, "value": 0})
        self.contract = self.t.get_transaction_receipt(h)["contract_address"]
        self.faults = []  # [mode, remaining]

    def take_fault(self, method):
        with self.lock:
            if not self.faults:
                return None
            if self.faults[0][2] is not None and self.faults[0][2] != method:
                return None
            mode = self.faults[0][0]
            self.faults[0][1] -= 1
            if self.faults[0][1] <= 0:
                self.faults.pop(0)
            return mode

    def tx_in(self, tx):
        out = {}
        for k in ("from", "to", "data", "input"):
            if tx.get(k):
                out["data" if k == "input" else k] = tx[k]
        for k in ("gas", "value", "maxFeePerGas", "maxPriorityFeePerGas", "gasPrice"):
            if tx.get(k) is not None:
                key = {"maxFeePerGas": "max_fee_per_gas", "maxPriorityFeePerGas": "max_priority_fee_per_gas",
                       "gasPrice": "gas_price"}.get(k, k)
                out[key] = to_int(tx[k])
        out.setdefault("from", self.funder)
        return out

    @staticmethod
    def log_out(l):
        return {"address": l["address"], "topics": [t if isinstance(t, str) else "0x" + bytes(t).hex() for t in l["topics"]],
                "data": l["data"] if isinstance(l["data"], str) else "0x" + bytes(l["data"]).hex(),
                "blockNumber": hx(l["block_number"]), "transactionHash": l["transaction_hash"],
                "transactionIndex": hx(l["transaction_index"]), "blockHash": l["block_hash"],
                "logIndex": hx(l["log_index"]), "removed": False}

    def receipt_out(self, r):
        return {"transactionHash": r["transaction_hash"], "transactionIndex": hx(r["transaction_index"]),
                "blockHash": r["block_hash"], "blockNumber": hx(r["block_number"]), "from": r["from"],
                "to": r["to"], "contractAddress": r["contract_address"], "gasUsed": hx(r["gas_used"]),
                "cumulativeGasUsed": hx(r["cumulative_gas_used"]),
                "effectiveGasPrice": hx(r["effective_gas_price"]), "status": hx(r["status"]),
                "type": r.get("type", "0x2"), "logs": [self.log_out(l) for l in r["logs"]]}

    def call(self, method, params):
        t = self.t
        if method == "eth_chainId":
            return hx(self.lie_chain_id if self.lie_chain_id is not None else self.chain_id)
        if method == "net_version":
            return str(self.chain_id)
        if method == "eth_blockNumber":
            return hx(t.get_block_by_number("latest")["number"])
        if method == "eth_getBalance":
            return hx(t.get_balance(params[0], block_id(params[1] if len(params) > 1 else None)))
        if method == "eth_getTransactionCount":
            return hx(t.get_nonce(params[0], block_id(params[1] if len(params) > 1 else None)))
        if method == "eth_gasPrice":
            return hx(t.get_block_by_number("latest")["base_fee_per_gas"] + 10**9)
        if method == "eth_maxPriorityFeePerGas":
            return hx(10**9)
        if method == "eth_getBlockByNumber":
            b = t.get_block_by_number(block_id(params[0]))
            return {"number": hx(b["number"]), "hash": b["hash"], "timestamp": hx(b["timestamp"]),
                    "baseFeePerGas": hx(b["base_fee_per_gas"]), "gasLimit": hx(b["gas_limit"])}
        if method == "eth_estimateGas":
            try:
                return hx(t.estimate_gas(self.tx_in(params[0])))
            except TransactionFailed as e:
                msg, data = revert_message(e.args[0] if e.args else b"")
                raise RpcError(3, "execution reverted" + (": " + msg if msg else ""), data)
        if method == "eth_call":
            try:
                return t.call(self.tx_in(params[0]), block_id(params[1] if len(params) > 1 else None))
            except TransactionFailed as e:
                msg, data = revert_message(e.args[0] if e.args else b"")
                raise RpcError(3, "execution reverted" + (": " + msg if msg else ""), data)
        if method == "eth_sendRawTransaction":
            try:
                return t.send_raw_transaction(params[0])
            except Exception as e:  # py-evm and eth-tester each have their own ValidationError
                msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                if "nonce" in msg.lower():  # say it the way geth does
                    msg = "nonce too low: " + msg
                raise RpcError(-32000, msg)
        if method == "eth_getTransactionReceipt":
            try:
                return self.receipt_out(t.get_transaction_receipt(params[0]))
            except TransactionNotFound:
                return None
        if method == "eth_getLogs":
            f = params[0]
            fid = t.create_log_filter(from_block=block_id(f.get("fromBlock", "earliest")) if f.get("fromBlock") != "earliest" else 0,
                                      to_block=block_id(f.get("toBlock", "latest")),
                                      address=f.get("address"), topics=f.get("topics"))
            try:
                return [self.log_out(l) for l in t.get_all_filter_logs(fid)]
            finally:
                t.delete_filter(fid)
        if method == "dev_fund":
            h = t.send_transaction({"from": self.funder, "to": params[0], "value": to_int(params[1]), "gas": 21000})
            return h
        if method == "dev_increaseTime":
            now = t.get_block_by_number("latest")["timestamp"]
            t.time_travel(now + to_int(params[0]))
            return hx(t.get_block_by_number("latest")["timestamp"])
        if method == "dev_fault":
            self.faults.append([params[0], int(params[1]) if len(params) > 1 else 1,
                                params[2] if len(params) > 2 else None])
            return True
        raise RpcError(-32601, f"method not found: {method}")


def make_handler(chain):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def reply(self, code, body, ctype="application/json"):
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n)
            try:
                req = json.loads(body)
            except ValueError:
                return self.reply(200, json.dumps({"jsonrpc": "2.0", "id": None,
                                                   "error": {"code": -32700, "message": "parse error"}}))
            method = req.get("method", "")
            fault = None if method.startswith("dev_") else chain.take_fault(method)
            if fault == "malformed":
                return self.reply(200, '{"jsonrpc": "2.0", "id": ')
            if fault == "http500":
                return self.reply(500, "internal error", "text/plain")
            if fault == "drop":
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if fault == "slow":
                time.sleep(2)
            resp = {"jsonrpc": "2.0", "id": req.get("id")}
            try:
                with chain.lock:
                    if fault == "wrong_chain" and method == "eth_chainId":
                        resp["result"] = hx(chain.chain_id + 1)
                    else:
                        resp["result"] = chain.call(method, req.get("params") or [])
            except RpcError as e:
                resp["error"] = {"code": e.code, "message": e.message}
                if e.data is not None:
                    resp["error"]["data"] = e.data
            except Exception as e:  # any other failure of the chain is an RPC error, not a crash
                resp["error"] = {"code": -32603, "message": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            self.reply(200, json.dumps(resp))

    return Handler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ready", required=True)
    ap.add_argument("--chain-id-lie", type=int, default=None)
    ap.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    ap.add_argument("--tls-key", help="the certificate's private key (PEM)")
    a = ap.parse_args()
    chain = Chain(a.chain_id_lie)
    server = ThreadingHTTPServer(("127.0.0.1", a.port), make_handler(chain))
    server.daemon_threads = True
    scheme = "http"
    if a.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.tls_cert, a.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    port = server.server_address[1]
    info = {"url": f"{scheme}://127.0.0.1:{port}", "chain_id": chain.chain_id, "contract": chain.contract,
            "funder": chain.funder}
    tmp = a.ready + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(info) + "\n")
    pathlib.Path(tmp).rename(a.ready)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
