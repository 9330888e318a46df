"""Cloud storage behind the emulator: moto's S3-compatible server, with IAM authentication switched
on, and a strict proxy in front of it that clients reach.

Why a proxy: moto (5.x) checks SigV4 *header* signatures, access keys and session tokens once IAM
authentication is on, but it does not verify presigned-URL signatures or their expiry, it does not
refuse a `Authorization: Bearer` header in the way S3 does, and it does not check the expiry of STS
credentials. The proxy does those checks, records every request (so tests can assert what reached
storage), and forwards what passes to moto:

- `Authorization: Bearer ...` -> 400 InvalidArgument "Unsupported Authorization Type" (S3's answer).
- presigned URL and an Authorization header together -> 400 InvalidArgument.
- `Transfer-Encoding: chunked` upload -> 501 NotImplemented (S3 answers chunked PUTs so); an upload
  without Content-Length -> 411 MissingContentLength.
- presigned URL: SigV4 query signature recomputed here (403 SignatureDoesNotMatch when it differs,
  also when a signed header such as Host was changed) and its X-Amz-Date + X-Amz-Expires checked
  (403 AccessDenied "Request has expired"). A valid presigned request is re-signed with SigV4 headers
  for the same key and forwarded, so moto's own IAM check also runs.
- header-signed requests (UC temporary credentials): the proxy refuses an access key it issued once
  its expiry passed (400 ExpiredToken); moto checks the signature, the access key, the session
  token (X-Amz-Security-Token must equal the one STS issued) and the IAM policy of the role (scoped
  to the model version's prefix).
- no credentials at all -> 403 AccessDenied.
"""
import datetime
import hashlib
import hmac
import http.client
import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, quote, urlsplit
from xml.sax.saxutils import escape

import boto3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

ACCOUNT_ID = "123456789012"  # moto's default account
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------
# The process-wide moto server (its backends are module-global, so one per process).
# ------------------------------------------------------------------------------------------------
class _Moto:
    _lock = threading.Lock()
    _instance = None
    # Kept running when its last user stops (a test session starting emulator after emulator:
    # each would otherwise boot it again). Its backends are process-global either way.
    keep_alive = False

    def __init__(self):
        from moto import settings
        from moto.core.authorization import ActionAuthenticatorMixin
        from moto.server import ThreadedMotoServer

        # Everything before the bootstrap user exists runs unauthenticated, then IAM auth is on for
        # every request, including the emulator's own.
        settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self.port = port
        iam = boto3.client("iam", endpoint_url=self.endpoint, region_name="us-east-1",
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        name = f"emulator-bootstrap-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        self.admin = (key["AccessKeyId"], key["SecretAccessKey"])
        ActionAuthenticatorMixin.request_count = 0
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        self.users = 0

    @classmethod
    def acquire(cls):
        with cls._lock:
            if cls._instance is None:
                cls._instance = _Moto()
            cls._instance.users += 1
            return cls._instance

    @classmethod
    def release(cls):
        with cls._lock:
            inst = cls._instance
            if inst is None:
                return
            inst.users -= 1
            if inst.users <= 0 and not cls.keep_alive:
                inst.server.stop()
                cls._instance = None

    def client(self, service, creds=None, endpoint=None, region="us-east-1"):
        ak, sk = creds or self.admin
        return boto3.client(service, endpoint_url=endpoint or self.endpoint, region_name=region,
                            aws_access_key_id=ak, aws_secret_access_key=sk,
                            config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                          retries={"max_attempts": 2}))


# ------------------------------------------------------------------------------------------------
# SigV4 presigned-URL verification
# ------------------------------------------------------------------------------------------------
def _enc(s):
    return quote(s, safe="-_.~")


def _sign_key(secret, date, region, service):
    k = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


def presigned_signature(method, raw_path, pairs, headers, secret):
    """The SigV4 signature S3 expects for a presigned URL (query-string auth, UNSIGNED-PAYLOAD)."""
    q = dict(pairs)
    signed = q["X-Amz-SignedHeaders"].split(";")
    canonical_query = "&".join(sorted(f"{_enc(k)}={_enc(v)}" for k, v in pairs if k != "X-Amz-Signature"))
    canonical_headers = "".join(f"{h}:{' '.join((headers.get(h) or '').split())}\n" for h in signed)
    creq = "\n".join([method, raw_path, canonical_query, canonical_headers, ";".join(signed),
                      "UNSIGNED-PAYLOAD"])
    _, date, region, service, _ = q["X-Amz-Credential"].split("/")
    scope = "/".join([date, region, service, "aws4_request"])
    sts = "\n".join(["AWS4-HMAC-SHA256", q["X-Amz-Date"], scope, hashlib.sha256(creq.encode()).hexdigest()])
    return hmac.new(_sign_key(secret, date, region, service), sts.encode(), hashlib.sha256).hexdigest()


def s3_error(code, message, status, **extra):
    fields = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in extra.items())
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{escape(message)}</Message>{fields}<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId>"
            f"</Error>").encode()
    return status, body


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "AmazonS3"
    sys_version = ""

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        self._handle()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    def _reply(self, status, body=b"", headers=(), close=False):
        self.send_response(status)
        sent = set()
        for k, v in headers:
            if k.lower() in HOP_BY_HOP or k.lower() == "content-length":
                continue
            self.send_header(k, v)
            sent.add(k.lower())
        if "content-type" not in sent and body:
            self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _handle(self):
        st = self.server.storage
        url = urlsplit(self.path)
        raw_path = url.path
        pairs = parse_qsl(url.query, keep_blank_values=True)
        q = dict(pairs)
        authz = self.headers.get("Authorization") or ""
        presigned = "X-Amz-Signature" in q
        kind = ("bearer" if authz.lower().startswith("bearer") else
                "sigv4" if authz.startswith("AWS4-HMAC-SHA256") else
                "other" if authz else "presigned" if presigned else "none")
        entry = {"time": time.time(), "method": self.command, "path": raw_path,
                 "query": sorted(k for k, _ in pairs if not k.startswith("X-Amz-")),
                 "auth": kind, "authorization_scheme": authz.split(" ", 1)[0] if authz else None,
                 "has_bearer": kind == "bearer", "status": None}
        st._record(entry)

        def fail(status_body, close=False):
            entry["status"] = status_body[0]
            self._reply(status_body[0], status_body[1], close=close)

        fault = st._take_fault(self.command, raw_path)
        if fault is not None:
            entry["injected"] = True
            length = self.headers.get("Content-Length")
            if length:
                self.rfile.read(int(length))
            return fail(s3_error(fault["code"], fault["message"], fault["status"]), close=not length)

        if kind == "bearer":
            return fail(s3_error("InvalidArgument", "Unsupported Authorization Type", 400,
                                 ArgumentName="Authorization", ArgumentValue="Bearer ***"), close=True)
        if presigned and authz:
            return fail(s3_error("InvalidArgument", "Only one auth mechanism allowed; only the X-Amz-Algorithm "
                                 "query parameter, Signature query string parameter or the Authorization "
                                 "header should be specified", 400, ArgumentName="Authorization"), close=True)
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            return fail(s3_error("NotImplemented", "A header you provided implies functionality that is not "
                                 "implemented", 501, Header="Transfer-Encoding"), close=True)
        length = self.headers.get("Content-Length")
        if self.command in ("PUT", "POST") and length is None:
            return fail(s3_error("MissingContentLength", "You must provide the Content-Length HTTP header.",
                                 411), close=True)
        body = self.rfile.read(int(length)) if length else b""
        entry["bytes"] = len(body)

        fwd_headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        fwd_path = self.path
        if presigned:
            err = st._check_presigned(self.command, raw_path, pairs, self.headers)
            if err:
                return fail(err)
            ak = q["X-Amz-Credential"].split("/")[0]
            kept = [(k, v) for k, v in pairs if not k.startswith("X-Amz-")]
            fwd_path = raw_path + ("?" + "&".join(f"{_enc(k)}={_enc(v)}" for k, v in kept) if kept else "")
            host = self.headers.get("Host")
            req = AWSRequest(method=self.command, url=f"http://{host}{fwd_path}",
                             headers={"Host": host, "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
            S3SigV4Auth(Credentials(ak, st._secret_for(ak)), "s3", st.region).add_auth(req)
            for h in ("Authorization", "X-Amz-Date", "X-Amz-Content-SHA256"):
                fwd_headers[h] = req.headers[h]
        elif kind == "sigv4":
            ak = authz.split("Credential=", 1)[1].split("/", 1)[0] if "Credential=" in authz else ""
            exp = st.temp_expiry.get(ak)
            if exp is not None and time.time() >= exp:
                return fail(s3_error("ExpiredToken", "The provided token has expired.", 400,
                                     **{"Token-0": "***"}))
        else:
            return fail(s3_error("AccessDenied", "Access Denied", 403))

        conn = http.client.HTTPConnection("127.0.0.1", st.moto.port, timeout=120)
        try:
            conn.putrequest(self.command, fwd_path, skip_host=True, skip_accept_encoding=True)
            for k, v in fwd_headers.items():
                if k.lower() == "content-length":
                    continue
                conn.putheader(k, v)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            data = resp.read()
            entry["status"] = resp.status
            headers = resp.getheaders()
            if raw_path.strip("/").count("/") == 0 and not any(k.lower() == "x-amz-bucket-region"
                                                                for k, _ in headers):
                headers.append(("x-amz-bucket-region", st.region))  # S3 names a bucket's region, even on 403
            self._reply(resp.status, data, headers)
        finally:
            conn.close()


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class S3Storage:
    credential_type = "AWS_PRESIGNED_URL"

    """The emulator's buckets, presigned URLs, temporary credentials, and the strict proxy.

    `endpoint` is the proxy URL that clients use (presigned URLs point at it; UC temporary
    credentials are used against it as an S3 endpoint: MLflow's boto3 takes it from
    MLFLOW_S3_ENDPOINT_URL)."""

    def __init__(self, region="us-west-2", presign_ttl=300.0, temp_credentials_ttl=900.0, name="ws"):
        self.region = region
        self.presign_ttl = float(presign_ttl)
        self.temp_credentials_ttl = float(temp_credentials_ttl)
        self.moto = _Moto.acquire()
        suffix = uuid.uuid4().hex[:8]
        self.bucket = f"databricks-{name}-root-{suffix}"
        self.uc_bucket = f"databricks-{name}-metastore-{suffix}"
        self.temp_expiry = {}
        self.faults = []
        self.requests = []
        self._rec_lock = threading.Lock()
        self._port = free_port()
        self.endpoint = f"http://127.0.0.1:{self._port}"
        self._secrets = {}
        admin_iam = self.moto.client("iam")
        user = f"emulator-{name}-{suffix}"
        admin_iam.create_user(UserName=user)
        admin_iam.put_user_policy(UserName=user, PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = admin_iam.create_access_key(UserName=user)["AccessKey"]
        self.user_arn = f"arn:aws:iam::{ACCOUNT_ID}:user/{user}"
        self.creds = (key["AccessKeyId"], key["SecretAccessKey"])
        self._secrets[key["AccessKeyId"]] = key["SecretAccessKey"]
        self.s3 = self.moto.client("s3", self.creds, region=region)  # direct to moto
        self._presigner = self.moto.client("s3", self.creds, endpoint=self.endpoint, region=region)
        self.iam = self.moto.client("iam", self.creds)
        self.sts = self.moto.client("sts", self.creds)
        for b in (self.bucket, self.uc_bucket):
            self.s3.create_bucket(Bucket=b, CreateBucketConfiguration={"LocationConstraint": region})
        self._proxy = _ProxyServer(("127.0.0.1", self._port), _ProxyHandler)
        self._proxy.storage = self
        self._thread = threading.Thread(target=self._proxy.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def close(self):
        self._proxy.shutdown()
        self._proxy.server_close()
        _Moto.release()

    # ---- proxy helpers ----------------------------------------------------------------------------
    def _record(self, entry):
        with self._rec_lock:
            self.requests.append(entry)

    def _secret_for(self, access_key):
        return self._secrets.get(access_key)

    def _check_presigned(self, method, raw_path, pairs, headers):
        q = dict(pairs)
        try:
            if q.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
                return s3_error("AuthorizationQueryParametersError", "X-Amz-Algorithm only supports "
                                "\"AWS4-HMAC-SHA256\"", 400)
            ak = q["X-Amz-Credential"].split("/")[0]
            secret = self._secret_for(ak)
            if secret is None:
                return s3_error("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in "
                                "our records.", 403)
            signed_at = datetime.datetime.strptime(q["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(
                tzinfo=datetime.timezone.utc).timestamp()
            expires = int(q["X-Amz-Expires"])
            expected = presigned_signature(method, raw_path, pairs, headers, secret)
        except (KeyError, ValueError):
            return s3_error("AuthorizationQueryParametersError", "Query-string authentication version 4 "
                            "requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, "
                            "X-Amz-SignedHeaders, and X-Amz-Expires parameters.", 400)
        if not hmac.compare_digest(expected, q.get("X-Amz-Signature", "")):
            return s3_error("SignatureDoesNotMatch", "The request signature we calculated does not match the "
                            "signature you provided. Check your key and signing method.", 403)
        now = time.time()
        if now > signed_at + expires:
            fmt = "%Y-%m-%dT%H:%M:%SZ"
            return s3_error("AccessDenied", "Request has expired", 403, **{
                "X-Amz-Expires": expires,
                "Expires": time.strftime(fmt, time.gmtime(signed_at + expires)),
                "ServerTime": time.strftime(fmt, time.gmtime(now))})
        return None

    def _take_fault(self, method, path):
        with self._rec_lock:
            for f in self.faults:
                if f["times"] > 0 and f["method"] in (None, method) and f["rx"].search(path):
                    f["times"] -= 1
                    return f
        return None

    def storage_requests(self):
        with self._rec_lock:
            return list(self.requests)

    # ---- presigned URLs ---------------------------------------------------------------------------
    def presign(self, op, bucket, key, ttl=None, **params):
        p = {"Bucket": bucket, "Key": key, **params}
        return self._presigner.generate_presigned_url(op, Params=p, ExpiresIn=max(1, int(round(ttl or self.presign_ttl))))

    # ---- object helpers (the emulator's own access, straight to moto) -----------------------------
    def list(self, bucket, prefix, delimiter=None):
        """All objects (and common prefixes when delimiter is given) under prefix."""
        objs, dirs = [], []
        kwargs = {"Bucket": bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        token = None
        while True:
            if token:
                kwargs["ContinuationToken"] = token
            r = self.s3.list_objects_v2(**kwargs)
            objs += r.get("Contents", [])
            dirs += [p["Prefix"] for p in r.get("CommonPrefixes", [])]
            if not r.get("IsTruncated"):
                return objs, dirs
            token = r["NextContinuationToken"]

    def head(self, bucket, key):
        try:
            return self.s3.head_object(Bucket=bucket, Key=key)
        except self.s3.exceptions.ClientError:
            return None

    def put(self, bucket, key, data):
        self.s3.put_object(Bucket=bucket, Key=key, Body=data)

    def delete(self, bucket, key):
        self.s3.delete_object(Bucket=bucket, Key=key)

    def get(self, bucket, key, range_header=None):
        kwargs = {"Bucket": bucket, "Key": key}
        if range_header:
            kwargs["Range"] = range_header
        return self.s3.get_object(**kwargs)

    def copy_prefix(self, src_bucket, src_prefix, dst_bucket, dst_prefix):
        objs, _ = self.list(src_bucket, src_prefix)
        for o in objs:
            rel = o["Key"][len(src_prefix):]
            self.s3.copy_object(Bucket=dst_bucket, Key=dst_prefix + rel,
                                CopySource={"Bucket": src_bucket, "Key": o["Key"]})
        return len(objs)

    # ---- multipart --------------------------------------------------------------------------------
    def create_multipart(self, bucket, key):
        return self.s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]

    def abort_multipart(self, bucket, key, upload_id):
        self.s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)

    def complete_multipart(self, bucket, key, upload_id, parts):
        self.s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={
            "Parts": [{"PartNumber": int(n), "ETag": e} for n, e in sorted(parts, key=lambda p: int(p[0]))]})

    # ---- temporary credentials (UC) ---------------------------------------------------------------
    def temporary_credentials(self, bucket, prefix, write=True, ttl=None):
        """STS credentials of a fresh role whose policy allows only `prefix` in `bucket`."""
        ttl = float(ttl or self.temp_credentials_ttl)
        role = f"uc-{uuid.uuid4().hex[:16]}"
        self.iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": self.user_arn},
                                                    "Action": "sts:AssumeRole"}]}))
        # moto names the object actions it checks after the S3 API (PutObject, GetObject,
        # CreateMultipartUpload, UploadPart, ...), so a writer gets every object action on the prefix.
        actions = ["s3:*"] if write else ["s3:GetObject"]
        prefix = prefix.rstrip("/")
        self.iam.put_role_policy(RoleName=role, PolicyName="scoped", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": actions, "Resource": f"arn:aws:s3:::{bucket}/{prefix}/*"},
                {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:HeadBucket", "s3:GetBucketLocation",
                                               "s3:ListBucketMultipartUploads"],
                 "Resource": f"arn:aws:s3:::{bucket}"}]}))
        c = self.sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/{role}", RoleSessionName="uc",
                                 DurationSeconds=900)["Credentials"]
        expires_at = time.time() + ttl
        self.temp_expiry[c["AccessKeyId"]] = expires_at
        return {"access_key_id": c["AccessKeyId"], "secret_access_key": c["SecretAccessKey"],
                "session_token": c["SessionToken"], "expires_at": expires_at}
