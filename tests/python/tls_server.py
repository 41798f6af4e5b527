"""An https server for the TLS tests, on 127.0.0.1 (port 0).

    tls_server.py <dir>

Writes into <dir>: `ca.pem` (the CA that signed the server's certificate), `other-ca.pem` (a CA
that signed nothing here) and the server's key and certificate. Then serves, over https:
  /mcp            an MCP server (Streamable HTTP, the official Python SDK) with one tool,
                  `echo(message)` -> "Echo: <message>"
  /openapi.json   an OpenAPI 3.1 spec with one operation, `POST /echo` (operationId `echo`)
  POST /echo      answers {"echoed": <the JSON body>}
  POST /v1/traces an OTLP/HTTP receiver: answers 200 with an empty ExportTraceServiceResponse
  /jwks.json      the file <dir>/jwks.json as it is when asked for (404 while there is none)
and prints `PORT <n>` on stdout once listening. Runs until killed.
"""

import datetime
import ipaddress
import json
import socket
import sys
from pathlib import Path

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mcp.server.mcpserver import MCPServer
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "tls echo", "version": "1"},
    "servers": [{"url": "/"}],
    "paths": {
        "/echo": {
            "post": {
                "operationId": "echo",
                "summary": "Echo the body",
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"message": {"type": "string"}},
                            }
                        }
                    }
                },
            }
        }
    },
}


def name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def certificate(subject, issuer, public_key, signer, ca: bool, sans=None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(signer, hashes.SHA256())


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_certificates(out: Path) -> tuple[Path, Path]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate(name("mesh7 test CA"), name("mesh7 test CA"), ca_key.public_key(), ca_key, True)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = certificate(name("another CA"), name("another CA"), other_key.public_key(), other_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    leaf = certificate(name("127.0.0.1"), ca.subject, key.public_key(), ca_key, False, sans)
    (out / "ca.pem").write_bytes(pem(ca))
    (out / "other-ca.pem").write_bytes(pem(other))
    cert_file, key_file = out / "server.pem", out / "server.key"
    cert_file.write_bytes(pem(leaf))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def app(out: Path):
    server = MCPServer("tls-echo")

    @server.tool()
    def echo(message: str) -> str:
        """Echo the message back."""
        return f"Echo: {message}"

    @server.custom_route("/openapi.json", methods=["GET"])
    async def spec(_: Request) -> JSONResponse:
        return JSONResponse(SPEC)

    @server.custom_route("/echo", methods=["POST"])
    async def echo_body(request: Request) -> JSONResponse:
        return JSONResponse({"echoed": json.loads(await request.body() or b"null")})

    @server.custom_route("/v1/traces", methods=["POST"])
    async def otlp(request: Request) -> Response:
        await request.body()
        return Response(b"", media_type="application/x-protobuf")

    @server.custom_route("/jwks.json", methods=["GET"])
    async def jwks(_: Request) -> Response:
        path = out / "jwks.json"
        if not path.exists():
            return JSONResponse({"error": "no key set yet"}, status_code=404)
        return Response(path.read_bytes(), media_type="application/json")

    return server.streamable_http_app()


def main() -> None:
    out = Path(sys.argv[1])
    cert_file, key_file = write_certificates(out)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    config = uvicorn.Config(
        app(out),
        log_level="warning",
        ssl_certfile=str(cert_file),
        ssl_keyfile=str(key_file),
    )
    server = uvicorn.Server(config)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
