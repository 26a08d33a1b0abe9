"""A WinRM (WS-Management / WinRS) server for contract tests of the Hyper-V connector.

No Windows host exists here, so this speaks the exchanges pywinrm really sends, over HTTPS with HTTP/1.1
keep-alive: Create (open a shell), Command, Receive, Signal (terminate) and Delete (close the shell), each
answered with the SOAP a Windows host returns, RelatesTo echoing the request's MessageID. Authentication is
NTLM (wrapped in Negotiate, verified by pyspnego's acceptor: a wrong password fails like on Windows) or Basic.

PowerShell is not run: a script is recognised by its first line ("# bulwark: inventory v1") and answered with
recorded JSON from a responses file. Every action is appended to a log file, so tests can check the sequence.

    python -m tests.peer_tools.winrm_server --port 5986 --cert server.pem --key server.key \\
        --user 'HV\\backup' --password ... --responses responses.json --log exchanges.log
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import ssl
import sys
import tempfile
import threading
import uuid
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
}
ACTIONS = {
    "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create": "Create",
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command": "Command",
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive": "Receive",
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal": "Signal",
    "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete": "Delete",
}
DONE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"
RESOURCE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"


def envelope(action: str, relates_to: str, body: str, *, selector: str = "") -> bytes:
    header = (
        f'<a:Action s:mustUnderstand="true">{action}</a:Action>'
        f"<a:MessageID>uuid:{uuid.uuid4()}</a:MessageID>"
        f"<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"
        f"<a:RelatesTo>{relates_to}</a:RelatesTo>{selector}"
    )
    document = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<s:Envelope xml:lang="en-US" xmlns:s="{NS["s"]}" xmlns:a="{NS["a"]}" xmlns:x="{NS["x"]}" '
        f'xmlns:w="{NS["w"]}" xmlns:rsp="{NS["rsp"]}"><s:Header>{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>'
    )
    return document.encode("utf-8")


def clixml_error(message: str) -> bytes:
    escaped = message.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (
        '#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        f'<S S="Error">{escaped}_x000D__x000A_</S></Objs>'
    ).encode()


class State:
    def __init__(self, responses: Path, log: Path | None, user: str, password: str) -> None:
        self.responses_file = responses
        self.log = log
        self.user = user
        self.password = password
        self.shells: dict[str, dict[str, dict[str, Any]]] = {}
        self.lock = threading.Lock()

    def record(self, line: str) -> None:
        if self.log is not None:
            with self.lock, self.log.open("a") as handle:
                handle.write(line + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # NTLM authenticates a connection, so it must stay open
    server_version = "Microsoft-HTTPAPI/2.0"
    state: State

    def log_message(self, format: str, *args: Any) -> None:
        return None

    # --- authentication ---------------------------------------------------------------------------------------
    def _authenticated(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if getattr(self, "_ntlm_done", False):
            return True
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(token).decode().partition(":")
            except ValueError:
                return self._refuse()
            if (
                user.rpartition("\\")[2].lower() == self.state.user.lower()
                and password == self.state.password
            ):
                return True
            return self._refuse()
        if scheme.lower() in ("negotiate", "ntlm"):
            import spnego
            from spnego.exceptions import SpnegoError

            if getattr(self, "_ntlm", None) is None:
                self._ntlm = spnego.server(protocol="negotiate" if scheme.lower() == "negotiate" else "ntlm")
            try:
                answer = self._ntlm.step(base64.b64decode(token))
            except SpnegoError:
                self._ntlm = None
                self.state.record("AuthFailed")
                return self._refuse()
            if self._ntlm.complete:
                self._ntlm_done = True
                return True
            self._reply(
                401, b"", {"WWW-Authenticate": f"{scheme} {base64.b64encode(answer or b'').decode()}"}
            )
            return False
        return self._refuse()

    def _refuse(self) -> bool:
        self._reply(
            401, b"", {"WWW-Authenticate": "Negotiate", "WWW-Authenticate-Basic": 'Basic realm="WSMAN"'}
        )
        return False

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header("WWW-Authenticate" if key.startswith("WWW-Authenticate") else key, value)
        self.send_header("Content-Type", "application/soap+xml;charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    # --- WS-Management --------------------------------------------------------------------------------------------
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") != "/wsman":
            self._reply(404, b"")
            return
        if not self._authenticated() or not body:
            return
        root = ET.fromstring(body)
        action_url = root.findtext("s:Header/a:Action", default="", namespaces=NS)
        message_id = root.findtext("s:Header/a:MessageID", default="", namespaces=NS)
        action = ACTIONS.get(action_url)
        shell_id = root.findtext(
            "s:Header/w:SelectorSet/w:Selector[@Name='ShellId']", default="", namespaces=NS
        )
        self.state.record(action or f"Unknown {action_url}")
        if action == "Create":
            shell_id = str(uuid.uuid4()).upper()
            self.state.shells[shell_id] = {}
            selector = f'<w:SelectorSet><w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet>'
            response = (
                f"<x:ResourceCreated><a:Address>https://{self.headers.get('Host')}/wsman</a:Address>"
                f"<a:ReferenceParameters><w:ResourceURI>{RESOURCE}</w:ResourceURI>{selector}</a:ReferenceParameters>"
                f"</x:ResourceCreated>"
            )
            self._reply(200, envelope(action_url + "Response", message_id, response))
            return
        if shell_id not in self.state.shells:
            self._fault(
                message_id,
                "The request for the Windows Remote Shell with ShellId failed because the shell was not found.",
            )
            return
        if action == "Command":
            command = root.findtext("s:Body/rsp:CommandLine/rsp:Command", default="", namespaces=NS)
            command_id = str(uuid.uuid4()).upper()
            self.state.shells[shell_id][command_id] = self._run(command)
            response = (
                f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId></rsp:CommandResponse>"
            )
            self._reply(200, envelope(action_url + "Response", message_id, response))
        elif action == "Receive":
            stream = root.find("s:Body/rsp:Receive/rsp:DesiredStream", NS)
            command_id = stream.get("CommandId", "") if stream is not None else ""
            result = self.state.shells[shell_id].get(command_id)
            if result is None:
                self._fault(message_id, "The command was not found.")
                return
            parts = []
            for name in ("stdout", "stderr"):
                data: bytes = result[name]
                for start in range(0, len(data), 8192):
                    chunk = base64.b64encode(data[start : start + 8192]).decode()
                    parts.append(f'<rsp:Stream Name="{name}" CommandId="{command_id}">{chunk}</rsp:Stream>')
                parts.append(f'<rsp:Stream Name="{name}" CommandId="{command_id}" End="true"></rsp:Stream>')
            parts.append(
                f'<rsp:CommandState CommandId="{command_id}" State="{DONE}"><rsp:ExitCode>{result["exit"]}</rsp:ExitCode></rsp:CommandState>'
            )
            self._reply(
                200,
                envelope(
                    action_url + "Response",
                    message_id,
                    f"<rsp:ReceiveResponse>{''.join(parts)}</rsp:ReceiveResponse>",
                ),
            )
        elif action == "Signal":
            self._reply(200, envelope(action_url + "Response", message_id, "<rsp:SignalResponse/>"))
        elif action == "Delete":
            self.state.shells.pop(shell_id, None)
            self._reply(200, envelope(action_url + "Response", message_id, ""))
        else:
            self._fault(
                message_id,
                f"The WS-Management service cannot process the request: unknown action {action_url}",
            )

    def _fault(self, relates_to: str, message: str) -> None:
        body = (
            f'<s:Fault><s:Code><s:Value>s:Receiver</s:Value></s:Code><s:Reason><s:Text xml:lang="en-US">{message}</s:Text></s:Reason>'
            f'<s:Detail><f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsmanfault" Code="2150858843" Machine="hv-test">'
            f"<f:Message>{message}</f:Message></f:WSManFault></s:Detail></s:Fault>"
        )
        self._reply(500, envelope("http://schemas.dmtf.org/wbem/wsman/1/wsman/fault", relates_to, body))

    def _run(self, command: str) -> dict[str, Any]:
        words = command.split()
        if len(words) < 3 or words[0].lower() != "powershell" or words[1].lower() != "-encodedcommand":
            return {
                "stdout": b"",
                "stderr": clixml_error(f"'{words[0] if words else ''}' is not recognized"),
                "exit": 1,
            }
        script = base64.b64decode(words[2]).decode("utf-16-le")
        lines = script.splitlines()
        key = (lines[0] if lines else "").removeprefix("# bulwark:").strip()
        self.state.record(f"Script {key}")
        if len(lines) > 1 and lines[1].startswith("$vmId"):
            self.state.record(f"Parameters {lines[1]}")
        # Read on every command, so a test can change the host's answers between two backups.
        answer = json.loads(self.state.responses_file.read_text()).get(key)
        if answer is None:
            return {
                "stdout": b"",
                "stderr": clixml_error(f"no recorded answer for script {key!r}"),
                "exit": 1,
            }
        stdout = answer.get("stdout", "")
        if not isinstance(stdout, str):
            stdout = json.dumps(stdout, separators=(",", ":"))
        return {
            "stdout": stdout.encode("utf-8"),
            "stderr": clixml_error(answer["stderr"]) if answer.get("stderr") else b"",
            "exit": int(answer.get("exit", 0)),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--responses", required=True)
    parser.add_argument("--log")
    args = parser.parse_args()
    # pyspnego's NTLM acceptor reads its credentials from NTLM_USER_FILE ("DOMAIN:USER:PASSWORD" lines).
    domain, _, user = args.user.rpartition("\\")
    store = tempfile.NamedTemporaryFile("w", delete=False, suffix=".ntlm")  # noqa: SIM115
    with store:
        store.write(f"{domain}:{user}:{args.password}\n")
    os.environ["NTLM_USER_FILE"] = store.name
    Handler.state = State(
        Path(args.responses),
        Path(args.log) if args.log else None,
        user,
        args.password,
    )
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print("READY", flush=True)
    try:
        server.serve_forever()
    finally:
        os.unlink(store.name)


if __name__ == "__main__":
    sys.exit(main())
