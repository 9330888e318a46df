"""Workspace APIs: workspace folders, MLflow tracking (forwarded to the backing `mlflow server` with
Databricks' rules and shapes), run and logged-model artifacts (signed URLs, Files API, multipart),
the workspace model registry, and registered-model / experiment permissions."""
import json
import posixpath
import re
import threading
import time
import uuid

from botocore.exceptions import ClientError

from .errors import ApiError, invalid, not_found
from .httpcore import Response

TRACKING_ROOT = "dbfs:/databricks/mlflow-tracking"
REGISTRY_ROOT = "dbfs:/databricks/mlflow-registry"
_LOGGED_MODEL_LOC = re.compile(r"(dbfs:/databricks/mlflow-tracking/[^/]+)/models/(m-[0-9a-f]+)")
# The OSS server's trace location <exp root>/traces/<tr-id>/artifacts; Databricks' is
# <exp root>/<tr-id>/artifacts (mlflow/store/artifact/databricks_artifact_repo.py, _extract_resource)
_TRACE_LOC = re.compile(r"(dbfs:/databricks/mlflow-tracking/[^/]+)/traces/(tr-[^/]+)/artifacts")

# Tags Databricks manages itself and refuses to let a client write ("Cannot update tag '<key>'",
# INVALID_PARAMETER_VALUE), seen in mlflow-export-import issues #12 (mlflow.rootRunId), #187
# (mlflow.log-model.history); mlflow.user is set from the caller's identity; the
# mlflow.experiment.source* tags point at workspace nodes (issue #75: "Node ID ... does not exist").
REFUSED_RUN_TAGS = {"mlflow.rootRunId", "mlflow.log-model.history", "mlflow.user"}
REFUSED_TAG_PREFIXES = ("mlflow.experiment.source",)
PERMISSION_LEVELS = {
    "registered-models": ["CAN_READ", "CAN_EDIT", "CAN_MANAGE_STAGING_VERSIONS",
                          "CAN_MANAGE_PRODUCTION_VERSIONS", "CAN_MANAGE"],
    "experiments": ["CAN_READ", "CAN_EDIT", "CAN_MANAGE"],
}
PRINCIPAL_FIELDS = {"user_name": "UserName", "group_name": "GroupName",
                    "service_principal_name": "ServicePrincipalName"}


def dbfs_key(uri):
    """`dbfs:/databricks/mlflow-tracking/...` -> bucket key `databricks/mlflow-tracking/...`."""
    if not uri.startswith("dbfs:/"):
        raise invalid(f"Unsupported artifact location: {uri}")
    return uri[len("dbfs:/"):].strip("/")


def check_rel_path(path):
    path = (path or "").strip("/")
    if path.startswith("/") or any(p in ("..", ".") for p in path.split("/")) or "\x00" in path:
        raise invalid(f"Invalid artifact path: '{path}'")
    return path


def translate(obj):
    """Databricks shapes for what the backing OSS server answers."""
    if isinstance(obj, dict):
        # MLflow 3's own "workspace" field (OSS multi-workspace support) is not part of Databricks' answers
        return {k: translate(v) for k, v in obj.items() if not (k == "workspace" and v == "default")}
    if isinstance(obj, list):
        return [translate(v) for v in obj]
    if isinstance(obj, str) and "/models/m-" in obj:
        return _LOGGED_MODEL_LOC.sub(r"\1/logged_models/\2", obj)
    if isinstance(obj, str) and "/traces/tr-" in obj:
        return _TRACE_LOC.sub(r"\1/\2/artifacts", obj)
    return obj


class Workspace:
    def __init__(self, emu):
        self.emu = emu
        self.backend = emu.backend
        self.storage = emu.ws_storage  # S3 (moto) or Azure Blob (azurite); UC model storage is emu.storage
        self._lock = threading.RLock()
        self._next_id = 1000000000000000 + int(uuid.uuid4().int % 10**9)
        self.nodes = {}  # path -> {"object_type", "object_id", ...}
        for p in ["/", "/Users", "/Shared", "/Repos"]:
            self._add_node(p, "DIRECTORY")
        for user in sorted(emu.workspace_users | emu.service_principals):  # service principals have homes too
            self._add_node(f"/Users/{user}", "DIRECTORY")
        self.mv_state = {}  # (name, version) -> {"status", "status_message", "storage_prefix", "download_uri"}
        self.rm_ids = {}  # registered model name -> databricks id
        self.acls = {}  # (object_type, object_id) -> {(field, principal): level}
        self.owners = {}  # (object_type, object_id) -> creator
        self.fs_uploads = {}  # Files API multipart session_token -> (bucket, key, upload_id)
        self.fs_multipart_log = []  # ("initiate" | "part-urls" | "complete" | "abort", path) in order

    # ---- helpers ----------------------------------------------------------------------------------
    def _add_node(self, path, object_type, **extra):
        with self._lock:
            self._next_id += 1
            node = {"object_type": object_type, "path": path, "object_id": self._next_id, **extra}
            self.nodes[path] = node
            return node

    def forward(self, req, body_override=None, path=None):
        """Forward to the backing server, translating the answer; errors keep Databricks' shape."""
        path = path or req.raw_path  # as the client encoded it (tag keys, ids)
        body = req.body
        if body_override is not None:
            body = json.dumps(body_override).encode()
        elif req.method in ("DELETE", "PATCH", "POST") and not body and req.query:
            body = json.dumps({k: v[0] if len(v) == 1 else v for k, v in req.query.items()}).encode()
        status, data = self.backend.raw(req.method, path, req.query_string if req.method == "GET" else "",
                                        body)
        try:
            obj = json.loads(data) if data else {}
        except ValueError:
            obj = None
        if status == 404 and not isinstance(obj, dict):
            from .errors import no_endpoint
            raise no_endpoint(req.method, path)
        if not isinstance(obj, dict):
            raise ApiError("INTERNAL_ERROR", f"unexpected answer from the tracking store ({status})")
        if status != 200:
            raise ApiError(obj.get("error_code", "INTERNAL_ERROR"), obj.get("message", ""), status=status)
        return translate(obj)

    def get_run(self, run_id):
        if not run_id:
            raise invalid("Missing value for required parameter 'run_id'.")
        return translate(self.backend.call("GET", "runs/get", {"run_id": run_id}))["run"]

    def get_logged_model(self, model_id):
        return translate(self.backend.call("GET", f"logged-models/{model_id}"))["model"]

    # ---- /api/2.0/workspace -----------------------------------------------------------------------
    def mkdirs(self, req):
        path = req.arg("path")
        if not path or not path.startswith("/"):
            raise invalid(f"Path ({path}) must be absolute.")
        path = self._normalize(path)
        parts = [p for p in path.split("/") if p]
        with self._lock:
            cur = ""
            for i, part in enumerate(parts):
                cur += "/" + part
                node = self.nodes.get(cur)
                if node is None:
                    if i == 1 and parts[0] == "Users":
                        raise ApiError("DIRECTORY_PROTECTED", "Folder Users is protected", status=403)
                    self._add_node(cur, "DIRECTORY")
                elif node["object_type"] != "DIRECTORY":
                    raise ApiError("RESOURCE_ALREADY_EXISTS", f"Node named '{part}' already exists", status=400)
        return Response(200, {})

    def get_status(self, req):
        path = req.arg("path")
        if not path or not path.startswith("/"):
            raise invalid(f"Path ({path}) must be absolute.")
        node = self.nodes.get(self._normalize(path))
        if node is None:
            raise not_found(f"Path ({path}) doesn't exist.")
        out = {"object_type": node["object_type"], "path": node["path"], "object_id": node["object_id"],
               "resource_id": str(node.get("experiment_id", node["object_id"]))}
        return Response(200, out)

    def list_dir(self, req):
        path = self._normalize(req.arg("path") or "/")
        node = self.nodes.get(path)
        if node is None:
            raise not_found(f"Path ({path}) doesn't exist.")
        prefix = path.rstrip("/") + "/"
        objs = [{"object_type": n["object_type"], "path": p, "object_id": n["object_id"]}
                for p, n in sorted(self.nodes.items())
                if p.startswith(prefix) and "/" not in p[len(prefix):] and p != path]
        return Response(200, {"objects": objs} if objs else {})

    @staticmethod
    def _normalize(path):
        if path.startswith("/Workspace/"):
            path = path[len("/Workspace"):]
        return path.rstrip("/") or "/"

    def me(self, req):
        p = req.principal
        return Response(200, {"userName": p.name, "id": str(abs(hash(p.name)) % 10**15),
                              "displayName": p.name, "active": True})

    # ---- experiments --------------------------------------------------------------------------------
    def _check_experiment_name(self, name):
        if not isinstance(name, str) or not name.startswith("/"):
            raise invalid(f"Got an invalid experiment name '{name}'. An experiment name must be an absolute "
                          "path within the Databricks workspace, e.g. '/Users/<some-username>/my-experiment'.")
        name = self._normalize(name)
        parent = posixpath.dirname(name)
        pnode = self.nodes.get(parent)
        if pnode is None or pnode["object_type"] != "DIRECTORY":
            raise not_found(f"Parent directory {parent} does not exist.")
        if name in self.nodes:
            raise ApiError("RESOURCE_ALREADY_EXISTS", f"Node named '{posixpath.basename(name)}' already exists",
                           status=400)
        return name

    def create_experiment(self, req):
        body = dict(req.json)
        with self._lock:
            name = self._check_experiment_name(body.get("name"))
            body["name"] = name
            location = body.pop("artifact_location", None)  # Databricks chooses the artifact root itself
            if self.emu.external_artifact_locations and (location or "").startswith("s3://"):
                # An experiment with its own location: MLflow reads it with the cloud SDK and local
                # credentials; the workspace's credential and Files APIs serve only dbfs roots.
                body["artifact_location"] = location
            tags = [t for t in body.get("tags", []) or []]
            self._check_tags(tags, experiment=True)
            user = req.principal.name
            tags = [t for t in tags if t.get("key") not in ("mlflow.ownerEmail", "mlflow.ownerId",
                                                             "mlflow.experimentType")]
            tags += [{"key": "mlflow.ownerEmail", "value": user},
                     {"key": "mlflow.ownerId", "value": str(abs(hash(user)) % 10**15)},
                     {"key": "mlflow.experimentType", "value": "MLFLOW_EXPERIMENT"}]
            body["tags"] = tags
            out = self.forward(req, body_override=body)
            self._add_node(name, "MLFLOW_EXPERIMENT", experiment_id=out["experiment_id"])
            self.owners[("experiments", out["experiment_id"])] = user
        return Response(200, out)

    def get_experiment_by_name(self, req):
        name = req.arg("experiment_name")
        if isinstance(name, str) and name.startswith("/"):
            name = self._normalize(name)
        return Response(200, translate(self.backend.call("GET", "experiments/get-by-name",
                                                         {"experiment_name": name})))

    def update_experiment(self, req):
        new_name = req.arg("new_name")
        exp_id = req.arg("experiment_id")
        if new_name:
            with self._lock:
                new_name = self._check_experiment_name(new_name)
                body = dict(req.json)
                body["new_name"] = new_name
                out = self.forward(req, body_override=body)
                for p, n in list(self.nodes.items()):
                    if n.get("experiment_id") == str(exp_id):
                        del self.nodes[p]
                self._add_node(new_name, "MLFLOW_EXPERIMENT", experiment_id=str(exp_id))
            return Response(200, out)
        return Response(200, self.forward(req))

    def set_experiment_tag(self, req):
        self._check_tags([{"key": req.arg("key"), "value": req.arg("value")}], experiment=True)
        return Response(200, self.forward(req))

    # ---- runs -----------------------------------------------------------------------------------------
    def _check_tags(self, tags, experiment=False):
        for t in tags or []:
            key = t.get("key") if isinstance(t, dict) else None
            if key is None:
                continue
            if key == "mlflow.experiment.sourceId":
                raise not_found(f"Node ID {t.get('value')} does not exist.")
            if (not experiment and key in REFUSED_RUN_TAGS) or key.startswith(REFUSED_TAG_PREFIXES):
                raise invalid(f"Cannot update tag '{key}'")

    def create_run(self, req):
        body = dict(req.json)
        user = req.principal.name
        tags = [t for t in body.get("tags", []) or [] if t.get("key") != "mlflow.user"]
        self._check_tags(tags)
        tags.append({"key": "mlflow.user", "value": user})
        body["tags"] = tags
        body["user_id"] = user
        out = self.forward(req, body_override=body)
        run = out["run"]
        run_id = run["info"]["run_id"]
        parent = next((t["value"] for t in tags if t.get("key") == "mlflow.parentRunId"), None)
        root = run_id
        if parent:
            try:
                ptags = {t["key"]: t["value"] for t in self.get_run(parent)["data"].get("tags", [])}
                root = ptags.get("mlflow.rootRunId", parent)
            except ApiError:
                root = parent
        self.backend.call("POST", "runs/set-tag", body={"run_id": run_id, "key": "mlflow.rootRunId", "value": root})
        run.setdefault("data", {}).setdefault("tags", []).append({"key": "mlflow.rootRunId", "value": root})
        return Response(200, out)

    def set_run_tag(self, req):
        self._check_tags([{"key": req.arg("key"), "value": req.arg("value")}])
        return Response(200, self.forward(req))

    def log_batch(self, req):
        self._check_tags(req.json.get("tags"))
        return Response(200, self.forward(req))

    def passthrough(self, req):
        return Response(200, self.forward(req))

    def search_experiments(self, req):
        if req.method == "GET" and "max_results" not in req.query:
            # Databricks applies a default page size; the OSS server insists on max_results in a GET
            req.query_string = (req.query_string + "&" if req.query_string else "") + "max_results=1000"
        return Response(200, self.forward(req))

    # ---- run artifacts: signed URLs ----------------------------------------------------------------
    def _cred_info(self, key, write, extra):
        op = "put_object" if write else "get_object"
        return {**extra, "signed_uri": self.storage.presign(op, self.storage.bucket, key),
                "type": self.storage.credential_type, "headers": list(self.emu.signed_url_headers)}

    def _page(self, items, token, size):
        start = int(token) if token else 0
        end = start + size
        nxt = str(end) if end < len(items) else None
        return items[start:end], nxt

    def run_credentials(self, req, write):
        run = self.get_run(req.arg("run_id"))
        if write and run["info"].get("lifecycle_stage") == "deleted":
            raise invalid(f"The run {run['info']['run_id']} must be in the 'active' state. "
                          "Current state is deleted.")
        root = dbfs_key(run["info"]["artifact_uri"])
        paths, nxt = self._page(req.args("path"), req.arg("page_token"), self.emu.credentials_page_size)
        infos = [self._cred_info(f"{root}/{check_rel_path(p)}", write, {"run_id": run["info"]["run_id"], "path": p})
                 for p in paths]
        out = {"credential_infos": infos}
        if nxt:
            out["next_page_token"] = nxt
        return Response(200, out)

    def model_credentials(self, req, write):
        model_id = req.match.group("model_id")
        model = self.get_logged_model(model_id)
        root = dbfs_key(model["info"]["artifact_uri"])
        paths, nxt = self._page(req.args("paths"), req.arg("page_token"), self.emu.credentials_page_size)
        # Switch model_credentials_without_path: MLflow matches credentials by position
        # (databricks_artifact_repo.py, _get_credential_infos), so a workspace need not echo the path.
        echo = (lambda p: {}) if self.emu.model_credentials_without_path else (lambda p: {"path": p})
        creds = [{"model_id": model_id,
                  "credential_info": self._cred_info(f"{root}/{check_rel_path(p)}", write, echo(p))}
                 for p in paths]
        out = {"credentials": creds}
        if nxt:
            out["next_page_token"] = nxt
        return Response(200, out)

    def _listing(self, root_key, path, token):
        path = check_rel_path(path)
        base = f"{root_key}/{path}" if path else root_key
        objs, dirs = self.storage.list(self.storage.bucket, base + "/", delimiter="/")
        files = [{"path": d[len(root_key) + 1:].rstrip("/"), "is_dir": True} for d in dirs]
        files += [{"path": o["Key"][len(root_key) + 1:], "is_dir": False, "file_size": o["Size"]} for o in objs]
        if not files and path:
            head = self.storage.head(self.storage.bucket, base)
            if head is not None:
                files = [{"path": path, "is_dir": False, "file_size": head["ContentLength"]}]
        files.sort(key=lambda f: f["path"])
        return self._page(files, token, self.emu.list_page_size)

    def list_run_artifacts(self, req):
        run = self.get_run(req.arg("run_id") or req.arg("run_uuid"))
        files, nxt = self._listing(dbfs_key(run["info"]["artifact_uri"]), req.arg("path"), req.arg("page_token"))
        out = {"root_uri": run["info"]["artifact_uri"]}
        if files:
            out["files"] = files
        if nxt:
            out["next_page_token"] = nxt
        return Response(200, out)

    def list_model_artifacts(self, req):
        model = self.get_logged_model(req.match.group("model_id"))
        files, nxt = self._listing(dbfs_key(model["info"]["artifact_uri"]), req.arg("artifact_directory_path"),
                                   req.arg("page_token"))
        out = {"root_uri": model["info"]["artifact_uri"]}
        if files:
            out["files"] = files
        if nxt:
            out["next_page_token"] = nxt
        return Response(200, out)

    # ---- run artifacts: multipart -------------------------------------------------------------------
    def _run_key(self, req):
        run = self.get_run(req.arg("run_id"))
        path = check_rel_path(req.arg("path"))
        if not path:
            raise invalid("Missing value for required parameter 'path'.")
        return run["info"]["run_id"], path, f"{dbfs_key(run['info']['artifact_uri'])}/{path}"

    def _aws_only(self):
        if self.storage.credential_type != "AWS_PRESIGNED_URL":
            raise ApiError("NOT_IMPLEMENTED", "Multipart uploads are only supported for AWS storage.", status=501)

    def create_multipart(self, req):
        self._aws_only()
        run_id, path, key = self._run_key(req)
        n = int(req.arg("num_parts") or 0)
        if n < 1 or n > 10000:
            raise invalid(f"num_parts must be between 1 and 10000, got {n}")
        upload_id = self.storage.create_multipart(self.storage.bucket, key)
        parts = [{"run_id": run_id, "path": path, "type": "AWS_PRESIGNED_URL", "headers": [],
                  "signed_uri": self.storage.presign("upload_part", self.storage.bucket, key,
                                                     UploadId=upload_id, PartNumber=i)}
                 for i in range(1, n + 1)]
        abort = {"run_id": run_id, "path": path, "type": "AWS_PRESIGNED_URL", "headers": [],
                 "signed_uri": self.storage.presign("abort_multipart_upload", self.storage.bucket, key,
                                                    UploadId=upload_id)}
        return Response(200, {"upload_id": upload_id, "upload_credential_infos": parts,
                              "abort_credential_info": abort})

    def presigned_part_url(self, req):
        self._aws_only()
        run_id, path, key = self._run_key(req)
        upload_id = req.arg("upload_id")
        part = int(req.arg("part_number") or 0)
        if not upload_id or part < 1:
            raise invalid("upload_id and part_number are required")
        return Response(200, {"upload_credential_info": {
            "run_id": run_id, "path": path, "type": "AWS_PRESIGNED_URL", "headers": [],
            "signed_uri": self.storage.presign("upload_part", self.storage.bucket, key, UploadId=upload_id,
                                               PartNumber=part)}})

    def complete_multipart(self, req):
        self._aws_only()
        _, _, key = self._run_key(req)
        etags = [(p.get("part_number"), p.get("etag")) for p in req.json.get("part_etags", [])]
        try:
            self.storage.complete_multipart(self.storage.bucket, key, req.arg("upload_id"), etags)
        except ClientError as e:
            raise invalid(f"Failed to complete the multipart upload: {e.response['Error'].get('Code')}: "
                          f"{e.response['Error'].get('Message')}")
        return Response(200, {})

    # ---- Files API ------------------------------------------------------------------------------------
    _WSI = re.compile(r"^/WorkspaceInternal/Mlflow/Artifacts/(?P<exp>[^/]+)/(?P<kind>Runs|LoggedModels)/"
                      r"(?P<id>[^/]+)(?P<rest>/.*)?$")

    def fs_key(self, path, method, listing=False):
        """Bucket and key of a Files API path, after checking the resource exists."""
        m = self._WSI.match(path)
        if m:
            if not self.emu.files_api:
                raise ApiError("FEATURE_DISABLED", "The Files API is not enabled for MLflow artifacts in this "
                               "workspace.", status=403)
            # Switches files_api_list_404 / files_api_files_403: a workspace whose Files API lists
            # nothing and refuses files. What a real workspace answers with the Files API off for
            # MLflow artifacts is UNKNOWN; MLflow falls back per operation on any error
            # (mlflow/store/artifact/databricks_tracking_artifact_repo.py), and reads a 404 of
            # HEAD fs/directories as an empty folder (databricks_sdk_artifact_repo.py, _is_dir).
            if listing and self.emu.files_api_list_404:
                raise ApiError("NOT_FOUND", "The directory being accessed is not found.", status=404)
            if not listing and self.emu.files_api_files_403:
                raise ApiError("PERMISSION_DENIED", f"Access to {path} is denied.", status=403)
            exp, kind, rid, rest = m.group("exp"), m.group("kind"), m.group("id"), (m.group("rest") or "")
            rest = check_rel_path(rest)
            if kind == "Runs":
                run = self._cached_run(rid)
                if run is None or run["info"]["experiment_id"] != exp:
                    raise ApiError("NOT_FOUND", f"The path {path} does not exist.", status=404)
                base = f"databricks/mlflow-tracking/{exp}/{rid}"
            else:
                try:
                    model = self.get_logged_model(rid)
                except ApiError:
                    model = None
                if model is None or model["info"]["experiment_id"] != exp:
                    raise ApiError("NOT_FOUND", f"The path {path} does not exist.", status=404)
                base = f"databricks/mlflow-tracking/{exp}/logged_models/{rid}"
            return self.storage, self.storage.bucket, (f"{base}/{rest}" if rest else base)
        if path.startswith("/Models/") and self.emu.uc is not None:
            return self.emu.uc.fs_key(path, method)
        raise ApiError("NOT_FOUND", f"The path {path} does not exist (the emulator serves only MLflow "
                       "artifact paths).", status=404)

    def _cached_run(self, run_id):
        try:
            return self.get_run(run_id)
        except ApiError:
            return None

    def fs_presigned(self, req, write):
        """POST /api/2.0/fs/create-upload-url | create-download-url {path}: a presigned URL to storage."""
        path = req.arg("path")
        if not path or not path.startswith("/"):
            raise invalid("Missing or relative value for required parameter 'path'.")
        if path.startswith("/Models/"):
            return self.emu.uc.presigned(path, write)
        store, bucket, key = self.fs_key(path, "PUT" if write else "GET")
        if not write and store.head(bucket, key) is None:
            raise ApiError("NOT_FOUND", "The file being accessed is not found.", status=404)
        url = store.presign("put_object" if write else "get_object", bucket, key)
        return Response(200, {"url": url, "headers": list(self.emu.signed_url_headers)})

    def fs_put(self, req):
        store, bucket, key = self.fs_key(req.match.group("path"), "PUT")
        overwrite = (req.arg("overwrite") or "false").lower() == "true"
        if not overwrite and store.head(bucket, key) is not None:
            raise ApiError("ALREADY_EXISTS", "The file being created already exists.", status=409)
        # databricks-sdk mixins/files.py: "The workspace's Files API 2.0 handler rejects a request
        # body over 5 GiB" (_WORKSPACE_MAX_SINGLE_SHOT_SIZE); the status and code are the emulator's.
        if len(req.body) > self.emu.files_api_max_put:
            raise ApiError("INVALID_PARAMETER_VALUE", f"The request body has {len(req.body)} bytes, more than "
                           f"{self.emu.files_api_max_put}: use a multipart upload.", status=413)
        store.put(bucket, key, req.body)
        return Response(204, raw=b"")

    def fs_get(self, req):
        store, bucket, key = self.fs_key(req.match.group("path"), "GET")
        head = store.head(bucket, key)
        if head is None:
            raise ApiError("NOT_FOUND", "The file being accessed is not found.", status=404)
        hdrs = {"Last-Modified": head["LastModified"].strftime("%a, %d %b %Y %H:%M:%S GMT"),
                "Accept-Ranges": "bytes"}
        if req.method == "HEAD":
            hdrs["Content-Length-Hint"] = str(head["ContentLength"])
            r = Response(200, raw=b"", headers=hdrs, content_type="application/octet-stream")
            r.head_length = head["ContentLength"]
            return r
        rng = req.headers.get("Range")
        obj = store.get(bucket, key, rng)
        data = obj["Body"].read()
        status = 206 if rng else 200
        if rng:
            hdrs["Content-Range"] = obj.get("ContentRange", "")
        return Response(status, raw=data, headers=hdrs, content_type="application/octet-stream")

    def fs_delete(self, req):
        store, bucket, key = self.fs_key(req.match.group("path"), "DELETE")
        if store.head(bucket, key) is None:
            raise ApiError("NOT_FOUND", "The file being accessed is not found.", status=404)
        store.delete(bucket, key)
        return Response(204, raw=b"")

    # ---- Files API multipart (databricks-sdk 0.162 mixins/files.py, _PresignedEndpointClient and
    # _PresignedMultipartSession: initiate-upload, create-upload-part-urls, complete-upload,
    # abort-upload) -----------------------------------------------------------------------------
    def fs_action(self, req):
        """POST /api/2.0/fs/files<path>?action=initiate-upload|complete-upload|abort-upload."""
        path = req.match.group("path")
        action = req.arg("action")
        store, bucket, key = self.fs_key(path, "PUT")
        if store.credential_type != "AWS_PRESIGNED_URL":
            raise ApiError("NOT_IMPLEMENTED", "Multipart uploads are only supported for AWS storage.", status=501)
        if action == "initiate-upload":
            overwrite = (req.arg("overwrite") or "false").lower() == "true"
            if not overwrite and store.head(bucket, key) is not None:
                raise ApiError("ALREADY_EXISTS", "The file being created already exists.", status=409)
            token = uuid.uuid4().hex
            with self._lock:
                self.fs_uploads[token] = (path, bucket, key, store.create_multipart(bucket, key))
                self.fs_multipart_log.append(("initiate", path))
            return Response(200, {"multipart_upload": {"session_token": token}})
        if req.arg("upload_type") != "multipart":
            raise invalid(f"Unsupported upload_type {req.arg('upload_type')!r} for action {action!r}")
        session = self._fs_session(req.arg("session_token"), path)
        if action == "complete-upload":
            parts = [(p.get("part_number"), p.get("etag")) for p in (req.json or {}).get("parts", [])]
            try:
                store.complete_multipart(bucket, key, session[3], parts)
            except ClientError as e:
                raise invalid(f"Failed to complete the upload: {e.response['Error'].get('Code')}")
        elif action == "abort-upload":
            store.abort_multipart(bucket, key, session[3])
        else:
            raise invalid(f"Unsupported action {action!r}")
        with self._lock:
            self.fs_uploads.pop(req.arg("session_token"), None)
            self.fs_multipart_log.append(("complete" if action == "complete-upload" else "abort", path))
        return Response(200, {})

    def _fs_session(self, token, path):
        with self._lock:
            session = self.fs_uploads.get(token or "")
        if session is None or session[0] != path:
            raise ApiError("NOT_FOUND", "The upload session does not exist.", status=404)
        return session

    def fs_part_urls(self, req):
        """POST /api/2.0/fs/create-upload-part-urls {path, session_token, start_part_number, count, expire_time}."""
        body = req.json or {}
        path = body.get("path") or ""
        _, bucket, key, upload_id = self._fs_session(body.get("session_token"), path)
        first, count = int(body.get("start_part_number") or 0), int(body.get("count") or 0)
        if first < 1 or count < 1 or first + count - 1 > 10000 or not body.get("expire_time"):
            raise invalid("start_part_number, count and expire_time are required (parts 1 to 10000)")
        urls = [{"part_number": n, "headers": list(self.emu.signed_url_headers),
                 "url": self.storage.presign("upload_part", bucket, key, UploadId=upload_id, PartNumber=n)}
                for n in range(first, first + count)]
        with self._lock:
            self.fs_multipart_log.append(("part-urls", path))
        return Response(200, {"upload_part_urls": urls})

    def fs_dir(self, req):
        path = req.match.group("path").rstrip("/")
        store, bucket, key = self.fs_key(path, "GET", listing=True)
        objs, dirs = store.list(bucket, key + "/", delimiter="/")
        if not objs and not dirs:
            raise ApiError("NOT_FOUND", "The directory being accessed is not found.", status=404)
        if req.method == "HEAD":
            return Response(200, raw=b"")
        entries = [{"path": f"{path}/{d[len(key) + 1:].rstrip('/')}", "is_directory": True,
                    "name": d[len(key) + 1:].rstrip("/")} for d in dirs]
        entries += [{"path": f"{path}/{o['Key'][len(key) + 1:]}", "is_directory": False,
                     "file_size": o["Size"], "name": o["Key"][len(key) + 1:],
                     "last_modified": int(o["LastModified"].timestamp() * 1000)} for o in objs]
        entries.sort(key=lambda e: e["path"])
        size = int(req.arg("page_size") or 1000)
        page, nxt = self._page(entries, req.arg("page_token"), min(size, 1000, self.emu.list_page_size))
        out = {"contents": page}
        if nxt:
            out["next_page_token"] = nxt
        return Response(200, out)

    # ---- workspace model registry ---------------------------------------------------------------------
    def _rm_id(self, name):
        with self._lock:
            if name not in self.rm_ids:
                self.rm_ids[name] = uuid.uuid4().hex
            return self.rm_ids[name]

    def _patch_versions(self, obj):
        """Statuses and download URIs of model versions, as this workspace registry tracks them."""
        if isinstance(obj, dict):
            if "version" in obj and "name" in obj and "status" in obj:
                st = self.mv_state.get((obj["name"], str(obj["version"])))
                if st:
                    obj["status"] = st["status"]
                    if st.get("status_message"):
                        obj["status_message"] = st["status_message"]
                    else:
                        obj.pop("status_message", None)
            for v in obj.values():
                self._patch_versions(v)
        elif isinstance(obj, list):
            for v in obj:
                self._patch_versions(v)
        return obj

    def registry_passthrough(self, req):
        return Response(200, self._patch_versions(self.forward(req)))

    def create_registered_model(self, req):
        out = self.forward(req)
        name = out["registered_model"]["name"]
        rid = self._rm_id(name)
        self.owners[("registered-models", rid)] = req.principal.name
        return Response(200, out)

    def delete_registered_model(self, req):
        out = self.forward(req)
        name = req.arg("name")
        with self._lock:
            rid = self.rm_ids.pop(name, None)
            self.acls.pop(("registered-models", rid), None)
            self.owners.pop(("registered-models", rid), None)
            for key in [k for k in self.mv_state if k[0] == name]:
                del self.mv_state[key]
        return Response(200, out)

    def delete_model_version(self, req):
        out = self.forward(req)
        self.mv_state.pop((req.arg("name"), str(req.arg("version"))), None)
        return Response(200, out)

    def rename_registered_model(self, req):
        out = self.forward(req)
        old, new = req.arg("name"), req.arg("new_name")
        with self._lock:
            if old in self.rm_ids:
                self.rm_ids[new] = self.rm_ids.pop(old)
            for (n, v) in list(self.mv_state):
                if n == old:
                    self.mv_state[(new, v)] = self.mv_state.pop((n, v))
        return Response(200, self._patch_versions(out))

    def _resolve_ws_source(self, source, run_id):
        if not isinstance(source, str) or not source:
            raise invalid("Missing value for required parameter 'source'.")
        if source.startswith("models:/"):
            raise invalid(f"Invalid model version source: '{source}'. The Workspace Model Registry does not "
                          "support 'models:/' sources; use the model's artifact location "
                          "(dbfs:/databricks/mlflow-tracking/...) or a 'runs:/' URI.")
        if source.startswith("runs:/"):
            rest = source[len("runs:/"):]
            src_run, _, rel = rest.partition("/")
            if run_id and run_id != src_run:
                raise invalid(f"Invalid model version source: '{source}'. The run_id request parameter must "
                              "identify the run in the source.")
            run = self.get_run(src_run)
            rel = check_rel_path(rel)
            return run["info"]["artifact_uri"] + (f"/{rel}" if rel else "")
        if source.startswith("dbfs:/"):
            key = dbfs_key(source)
            check_rel_path(key)
            return source
        raise invalid(f"Invalid model version source: '{source}'. Sources must be DBFS paths "
                      "(dbfs:/databricks/mlflow-tracking/...) or 'runs:/' URIs.")

    def create_model_version(self, req):
        body = dict(req.json)
        body["source"] = self._resolve_ws_source(body.get("source"), body.get("run_id"))
        out = self.forward(req, body_override=body)
        mv = out["model_version"]
        name, version = mv["name"], str(mv["version"])
        reg_id = uuid.uuid4().hex
        leaf = posixpath.basename(dbfs_key(body["source"])) or "model"
        prefix = f"databricks/mlflow-registry/{reg_id}/models/{leaf}"
        state = {"status": "PENDING_REGISTRATION", "status_message": "", "prefix": prefix,
                 "download_uri": f"{REGISTRY_ROOT}/{reg_id}/models/{leaf}"}
        self.mv_state[(name, version)] = state
        mv["status"] = "PENDING_REGISTRATION"
        src_key = dbfs_key(body["source"])

        def copy():
            time.sleep(self.emu.ws_registration_delay)
            try:
                n = self.storage.copy_prefix(self.storage.bucket, src_key + "/", self.storage.bucket, prefix + "/")
                if n == 0:
                    state["status_message"] = (f"Failed to copy model files: no files found at {body['source']}")
                    state["status"] = "FAILED_REGISTRATION"
                else:
                    state["status"] = "READY"
            except Exception as e:  # noqa: BLE001
                state["status_message"] = f"Failed to copy model files: {e}"
                state["status"] = "FAILED_REGISTRATION"

        threading.Thread(target=copy, daemon=True).start()
        return Response(200, out)

    def get_download_uri(self, req):
        st = self.mv_state.get((req.arg("name"), str(req.arg("version"))))
        out = self.forward(req)
        if st:
            out["artifact_uri"] = st["download_uri"]
        return Response(200, out)

    def _mv_prefix(self, req):
        name, version = req.arg("name"), str(req.arg("version"))
        self.backend.call("GET", "model-versions/get", {"name": name, "version": version})
        st = self.mv_state.get((name, version))
        if st is None or st["status"] != "READY":
            raise invalid(f"Model version {name} version {version} is not READY.")
        return st["prefix"]

    def mv_list_artifacts(self, req):
        prefix = self._mv_prefix(req)
        files, nxt = self._listing(prefix, req.arg("path"), req.arg("page_token"))
        out = {}
        if files:
            out["files"] = files
        if nxt:
            out["next_page_token"] = nxt
        return Response(200, out)

    def mv_signed_download_uri(self, req):
        prefix = self._mv_prefix(req)
        path = check_rel_path(req.arg("path"))
        return Response(200, {"signed_uri": self.storage.presign("get_object", self.storage.bucket,
                                                                 f"{prefix}/{path}"),
                              "headers": list(self.emu.signed_url_headers)})

    def ws_alias(self, req):
        if not self.emu.ws_aliases:
            from .errors import no_endpoint
            raise no_endpoint(req.method, req.path)
        return self.registry_passthrough(req)

    def databricks_get_registered_model(self, req):
        out = self._patch_versions(self.backend.call("GET", "registered-models/get", {"name": req.arg("name")}))
        rm = translate(out)["registered_model"]
        rid = self._rm_id(rm["name"])
        rm["id"] = rid
        rm["permission_level"] = self._effective_level(("registered-models", rid), req.principal)
        return Response(200, {"registered_model_databricks": rm})

    def databricks_transition_stage(self, req):
        body = {k: req.json.get(k) for k in ("name", "version", "stage", "archive_existing_versions")}
        body["archive_existing_versions"] = bool(body.get("archive_existing_versions"))
        out = self._patch_versions(translate(self.backend.call("POST", "model-versions/transition-stage",
                                                               body=body)))
        return Response(200, {"model_version_databricks": out["model_version"]})

    # ---- permissions ------------------------------------------------------------------------------------
    def _object(self, req):
        otype, oid = req.match.group("otype"), req.match.group("oid")
        if otype == "registered-models":
            if oid not in self.rm_ids.values():
                raise not_found(f"Registered model with ID {oid} does not exist.")
        elif otype == "experiments":
            try:
                self.backend.call("GET", "experiments/get", {"experiment_id": oid})
            except ApiError:
                raise not_found(f"Experiment with ID {oid} does not exist.")
        return otype, oid

    def _effective_level(self, key, principal):
        if self.owners.get(key) == principal.name:
            return "CAN_MANAGE"
        acl = self.acls.get(key, {})
        for (field, who), level in acl.items():
            if who == principal.name:
                return level
        return "CAN_MANAGE"  # the emulator's callers are workspace admins

    def _acl_answer(self, otype, oid):
        key = (otype, oid)
        entries = []
        owner = self.owners.get(key)
        direct = dict(self.acls.get(key, {}))
        if owner and not any(who == owner for (_, who) in direct):
            field = "service_principal_name" if owner in self.emu.service_principals else "user_name"
            direct[(field, owner)] = "CAN_MANAGE"
        for (field, who), level in sorted(direct.items()):
            entries.append({field: who, "display_name": who,
                            "all_permissions": [{"permission_level": level, "inherited": False}]})
        entries.append({"group_name": "admins", "all_permissions": [
            {"permission_level": "CAN_MANAGE", "inherited": True, "inherited_from_object": [f"/{otype}/"]}]})
        object_type = {"registered-models": "registered-model", "experiments": "mlflowExperiment"}[otype]
        return {"object_id": f"/{otype}/{oid}", "object_type": object_type, "access_control_list": entries}

    def get_permissions(self, req):
        otype, oid = self._object(req)
        return Response(200, self._acl_answer(otype, oid))

    def permission_levels(self, req):
        otype, _ = self._object(req)
        return Response(200, {"permission_levels": [{"permission_level": lvl, "description": ""}
                                                    for lvl in PERMISSION_LEVELS[otype]]})

    def set_permissions(self, req, replace):
        otype, oid = self._object(req)
        parsed = {}
        for e in req.json.get("access_control_list", []) or []:
            fields = [f for f in PRINCIPAL_FIELDS if e.get(f)]
            if len(fields) != 1:
                raise invalid("Each access control entry must name exactly one of user_name, group_name, "
                              "service_principal_name.")
            field = fields[0]
            who = e[field]
            known = {"user_name": self.emu.workspace_users, "group_name": self.emu.groups,
                     "service_principal_name": self.emu.service_principals}[field]
            if who not in known:
                raise invalid(f"Principal: {PRINCIPAL_FIELDS[field]}({who}) does not exist")
            level = e.get("permission_level")
            if level not in PERMISSION_LEVELS[otype]:
                raise invalid(f"Permission level {level} is not supported for {otype}; supported: "
                              f"{', '.join(PERMISSION_LEVELS[otype])}")
            if field == "group_name" and who == "admins":
                raise invalid("The admins group permissions cannot be modified.")
            parsed[(field, who)] = level
        with self._lock:
            if replace:
                self.acls[(otype, oid)] = parsed
            else:
                self.acls.setdefault((otype, oid), {}).update(parsed)
        return Response(200, self._acl_answer(otype, oid))
