"""Unity Catalog model registry (`/api/2.0/mlflow/unity-catalog/...`), its model storage in S3
(temporary STS credentials scoped to a version's prefix, or Databricks default storage through
presigned URLs), and model grants (`/api/2.1/unity-catalog/permissions/function/<full name>`).

Kept in memory (UC is not an MLflow server), per emulator instance. Names are three-level and
case-insensitive (stored lower-case, as UC does); the catalog and schema must exist (the
`catalogs` argument of the emulator)."""
import re
import threading
import time
import uuid

from .errors import ApiError, invalid
from .httpcore import Response

RESERVED_TAG_CHARS = [".", ",", "-", "=", "/", ":"]
UC_PRIVILEGES = {"EXECUTE", "APPLY_TAG", "MANAGE", "ALL_PRIVILEGES"}
_IDENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")


def now_ms():
    return int(time.time() * 1000)


class UnityCatalog:
    def __init__(self, emu):
        self.emu = emu
        self.storage = emu.storage
        self._lock = threading.RLock()
        self.models = {}  # full name -> dict
        self.versions = {}  # full name -> {int version -> dict}
        self.grants = {}  # full name -> {principal -> set(privileges)}
        # Every model-versions/create body as received, so tests can assert what a client sent
        # (e.g. that a model_id from another workspace never arrives).
        self.create_requests = []
        # R2 account of the metastore when `uc_r2` is on (the host part of its r2:// locations).
        self.r2_account = f"emu{uuid.uuid4().hex[:12]}"

    # ---- error codes ---------------------------------------------------------------------------------
    # With `uc_short_error_codes` UC answers the short codes `NOT_FOUND` / `ALREADY_EXISTS`, which
    # MLflow's client takes as RESOURCE_DOES_NOT_EXIST / RESOURCE_ALREADY_EXISTS
    # (mlflow/tracking/client.py for UC prompts, mlflow/tracking/_model_registry/fluent.py
    # register_model). Which of the two a real UC model registry answers is UNKNOWN.
    def _missing(self, message):
        code = "NOT_FOUND" if self.emu.uc_short_error_codes else "RESOURCE_DOES_NOT_EXIST"
        return ApiError(code, message, status=404)

    def _duplicate(self, message):
        code = "ALREADY_EXISTS" if self.emu.uc_short_error_codes else "RESOURCE_ALREADY_EXISTS"
        return ApiError(code, message, status=409 if self.emu.uc_short_error_codes else 400)

    # ---- routes -----------------------------------------------------------------------------------
    def add_routes(self, r):
        U = "/api/2.0/mlflow/unity-catalog"
        r.add("GET|POST", U + r"/registered-models:is-databricks-sdk-models-artifact-repository-enabled",
              self.sdk_repo_enabled)
        r.add("POST", U + r"/registered-models/create", self.create_model)
        r.add("GET", U + r"/registered-models/get", self.get_model)
        r.add("PATCH", U + r"/registered-models/update", self.update_model)
        r.add("DELETE", U + r"/registered-models/delete", self.delete_model)
        r.add("GET", U + r"/registered-models/search", self.search_models)
        r.add("POST", U + r"/registered-models/set-tag", self.set_model_tag)
        r.add("DELETE", U + r"/registered-models/delete-tag", self.delete_model_tag)
        r.add("POST", U + r"/registered-models/alias", self.set_alias)
        r.add("DELETE", U + r"/registered-models/alias", self.delete_alias)
        r.add("GET", U + r"/registered-models/alias", self.get_by_alias)
        r.add("POST", U + r"/model-versions/create", self.create_version)
        r.add("POST", U + r"/model-versions/generate-temporary-credentials", self.temp_credentials)
        r.add("POST", U + r"/model-versions/finalize", self.finalize)
        r.add("GET", U + r"/model-versions/get", self.get_version)
        r.add("PATCH", U + r"/model-versions/update", self.update_version)
        r.add("DELETE", U + r"/model-versions/delete", self.delete_version)
        r.add("GET", U + r"/model-versions/search", self.search_versions)
        r.add("GET", U + r"/model-versions/get-download-uri", self.download_uri)
        r.add("POST", U + r"/model-versions/set-tag", self.set_version_tag)
        r.add("DELETE", U + r"/model-versions/delete-tag", self.delete_version_tag)
        r.add("POST", U + r"/model-versions/emit-lineage", lambda q: Response(200, {}))
        G = r"/api/2.1/unity-catalog/(?P<kind>permissions|effective-permissions)/(?P<stype>[a-z_]+)/(?P<full>[^/]+)"
        r.add("GET", G, self.get_grants)
        r.add("PATCH", r"/api/2.1/unity-catalog/permissions/(?P<stype>[a-z_]+)/(?P<full>[^/]+)", self.patch_grants)

    # ---- names and tags ------------------------------------------------------------------------------
    def full_name(self, name, must_exist=True):
        if not isinstance(name, str) or not name:
            raise invalid("Missing value for required parameter 'name'.")
        parts = name.split(".")
        if len(parts) != 3 or not all(parts):
            raise invalid(f"Invalid registered model name '{name}'. Models in Unity Catalog must be named "
                          "with a three-level name: <catalog>.<schema>.<model>.")
        for p in parts:
            if not _IDENT.match(p):
                raise invalid(f"Invalid name '{p}' in '{name}': names may contain only letters, digits, "
                              "underscores and hyphens.")
        catalog, schema, model = (p.lower() for p in parts)
        if catalog not in self.emu.catalogs:
            raise ApiError("CATALOG_DOES_NOT_EXIST", f"Catalog '{catalog}' does not exist.", status=404)
        if schema not in [s.lower() for s in self.emu.catalogs[catalog]]:
            raise ApiError("SCHEMA_DOES_NOT_EXIST", f"Schema '{catalog}.{schema}' does not exist.", status=404)
        full = f"{catalog}.{schema}.{model}"
        if must_exist and full not in self.models:
            raise self._missing(f"Registered model '{full}' does not exist.")
        return full

    @staticmethod
    def check_tag_key(key):
        if not isinstance(key, str) or not key:
            raise invalid("Tag name must not be empty.")
        if any(c in key for c in RESERVED_TAG_CHARS):
            raise invalid(f"Tag name {key} contains one or more of the reserved characters: "
                          f"List({', '.join(RESERVED_TAG_CHARS)})")

    def _version(self, full, version):
        try:
            v = int(version)
        except (TypeError, ValueError):
            raise invalid(f"Invalid model version number '{version}'.")
        mv = self.versions.get(full, {}).get(v)
        if mv is None:
            raise self._missing(f"Model version {full}/{v} does not exist.")
        return mv

    # ---- answers ---------------------------------------------------------------------------------
    def _model_json(self, full):
        m = self.models[full]
        out = {"name": full, "creation_timestamp": m["created"], "last_updated_timestamp": m["updated"],
               "user_id": m["owner"], "description": m["description"],
               "tags": [{"key": k, "value": v} for k, v in sorted(m["tags"].items())],
               "aliases": [{"alias": a, "version": str(v)} for a, v in sorted(m["aliases"].items())]}
        return {k: v for k, v in out.items() if v not in ("", None, [])}

    def _version_json(self, mv):
        full = mv["name"]
        aliases = [a for a, v in self.models[full]["aliases"].items() if v == mv["version"]]
        out = {"name": full, "version": str(mv["version"]), "creation_timestamp": mv["created"],
               "last_updated_timestamp": mv["updated"], "user_id": mv["owner"],
               "description": mv["description"], "source": mv["source"], "run_id": mv["run_id"],
               "run_tracking_server_id": mv["run_tracking_server_id"], "status": mv["status"],
               "status_message": mv["status_message"], "storage_location": mv["storage_location"],
               "tags": [{"key": k, "value": v} for k, v in sorted(mv["tags"].items())],
               "aliases": [{"alias": a, "version": str(mv["version"])} for a in sorted(aliases)],
               "model_id": mv["model_id"]}
        if self.emu.uc_return_dependencies:
            out["feature_deps"] = mv["feature_deps"]
            out["model_version_dependencies"] = mv["model_version_dependencies"]
        return {k: v for k, v in out.items() if v not in ("", None, [])}

    # ---- registered models ---------------------------------------------------------------------------
    def sdk_repo_enabled(self, req):
        return Response(200, {"is_databricks_sdk_models_artifact_repository_enabled": bool(self.emu.uc_sdk_models_repo)})

    def create_model(self, req):
        full = self.full_name(req.arg("name"), must_exist=False)
        tags = req.json.get("tags") or []
        for t in tags:
            self.check_tag_key(t.get("key"))
        with self._lock:
            if full in self.models:
                raise self._duplicate(f"Registered model '{full}' already exists.")
            ts = now_ms()
            mid = str(uuid.uuid4())
            self.models[full] = {"created": ts, "updated": ts, "owner": req.principal.name, "id": mid,
                                 "description": req.json.get("description") or "",
                                 "tags": {t["key"]: t.get("value", "") for t in tags}, "aliases": {},
                                 "storage_root": f"models/{mid}"}
            self.versions[full] = {}
            self.grants[full] = {}
        return Response(200, {"registered_model": self._model_json(full)})

    def get_model(self, req):
        return Response(200, {"registered_model": self._model_json(self.full_name(req.arg("name")))})

    def update_model(self, req):
        full = self.full_name(req.arg("name"))
        with self._lock:
            m = self.models[full]
            if req.arg("description") is not None:
                m["description"] = req.arg("description")
            new_name = req.arg("new_name")
            if new_name:
                new_full = self.full_name(new_name, must_exist=False)
                if new_full in self.models:
                    raise self._duplicate(f"Registered model '{new_full}' already exists.")
                self.models[new_full] = self.models.pop(full)
                self.versions[new_full] = self.versions.pop(full)
                self.grants[new_full] = self.grants.pop(full)
                for mv in self.versions[new_full].values():
                    mv["name"] = new_full
                full = new_full
            m["updated"] = now_ms()
        return Response(200, {"registered_model": self._model_json(full)})

    def delete_model(self, req):
        full = self.full_name(req.arg("name"))
        with self._lock:
            for d in (self.models, self.versions, self.grants):
                d.pop(full, None)
        return Response(200, {})

    def search_models(self, req):
        if req.arg("filter"):
            raise invalid("Unity Catalog does not support filters in registered model search.")
        names = sorted(self.models)
        size = int(req.arg("max_results") or 100)
        start = int(req.arg("page_token") or 0)
        out = {"registered_models": [self._model_json(n) for n in names[start:start + size]]}
        if start + size < len(names):
            out["next_page_token"] = str(start + size)
        return Response(200, out)

    def set_model_tag(self, req):
        full = self.full_name(req.arg("name"))
        self.check_tag_key(req.arg("key"))
        self.models[full]["tags"][req.arg("key")] = req.arg("value") or ""
        return Response(200, {})

    def delete_model_tag(self, req):
        full = self.full_name(req.arg("name"))
        self.models[full]["tags"].pop(req.arg("key"), None)
        return Response(200, {})

    def set_alias(self, req):
        full = self.full_name(req.arg("name"))
        alias = req.arg("alias")
        if not alias or not re.match(r"^[A-Za-z0-9_\-]+$", alias):
            raise invalid(f"Invalid alias name '{alias}'.")
        if alias.lower() == "latest" or re.match(r"^[vV]\d+$", alias):
            raise invalid(f"Alias name '{alias}' is reserved.")
        mv = self._version(full, req.arg("version"))
        self.models[full]["aliases"][alias.lower()] = mv["version"]
        return Response(200, {})

    def delete_alias(self, req):
        full = self.full_name(req.arg("name"))
        self.models[full]["aliases"].pop((req.arg("alias") or "").lower(), None)
        return Response(200, {})

    def get_by_alias(self, req):
        full = self.full_name(req.arg("name"))
        alias = (req.arg("alias") or "").lower()
        v = self.models[full]["aliases"].get(alias)
        if v is None:
            raise self._missing(f"Alias '{alias}' does not exist for model '{full}'.")
        return Response(200, {"model_version": self._version_json(self._version(full, v))})

    # ---- model versions ------------------------------------------------------------------------------
    def _check_model_id(self, model_id):
        """`uc_foreign_model_id="refuse"`: a model_id that is no logged model of this workspace is
        refused. What real UC does with one is UNKNOWN: MLflow's UC store clears such an id before
        it creates the version (rest_store.py `_get_logged_model_from_model_id`, "cross-workspace
        model copying") so that "the backend doesn't attempt to resolve an ID that doesn't exist
        locally". The default ("accept") stores it, as this emulator always did."""
        if not model_id or self.emu.uc_foreign_model_id != "refuse":
            return
        try:
            self.emu.ws.get_logged_model(model_id)
        except ApiError:
            raise ApiError("RESOURCE_DOES_NOT_EXIST", f"Logged model '{model_id}' does not exist in this "
                           "workspace.", status=404)

    def _storage_location(self, prefix):
        if self.emu.uc_r2:
            # Unity Catalog's R2 form, parsed by mlflow/store/artifact/r2_artifact_repo.py.
            return f"r2://{self.storage.uc_bucket}@{self.r2_account}.r2.cloudflarestorage.com/{prefix}"
        return f"s3://{self.storage.uc_bucket}/{prefix}"

    def create_version(self, req):
        self.create_requests.append(dict(req.json or {}))
        full = self.full_name(req.arg("name"))
        self._check_model_id(req.arg("model_id"))
        source = req.arg("source")
        if not source:
            raise invalid("Missing value for required parameter 'source'.")
        tags = req.json.get("tags") or []
        for t in tags:
            self.check_tag_key(t.get("key"))
        with self._lock:
            existing = self.versions[full]
            v = max(existing, default=0) + 1
            ts = now_ms()
            vid = str(uuid.uuid4())
            prefix = f"{self.models[full]['storage_root']}/versions/{vid}"
            mv = {"name": full, "version": v, "created": ts, "updated": ts, "owner": req.principal.name,
                  "description": req.arg("description") or "", "source": source, "run_id": req.arg("run_id"),
                  "run_tracking_server_id": req.arg("run_tracking_server_id"), "model_id": req.arg("model_id"),
                  "status": "PENDING_REGISTRATION", "status_message": "", "prefix": prefix,
                  "storage_location": self._storage_location(prefix),
                  "feature_deps": req.arg("feature_deps") or "",
                  "model_version_dependencies": list(req.json.get("model_version_dependencies") or []),
                  "tags": {t["key"]: t.get("value", "") for t in tags}}
            existing[v] = mv
        return Response(200, {"model_version": self._version_json(mv)})

    def temp_credentials(self, req):
        full = self.full_name(req.arg("name"))
        mv = self._version(full, req.arg("version"))
        op = req.arg("operation")
        write = op in ("MODEL_VERSION_OPERATION_READ_WRITE", 2, "2")
        if not write and op not in ("MODEL_VERSION_OPERATION_READ", 1, "1"):
            raise invalid(f"Invalid operation '{op}'.")
        if write and mv["status"] != "PENDING_REGISTRATION":
            raise invalid(f"Model version {full}/{mv['version']} is {mv['status']}; write credentials are only "
                          "issued for versions in PENDING_REGISTRATION.")
        if self.emu.uc_storage_mode == "DEFAULT_STORAGE":
            return Response(200, {"credentials": {"storage_mode": "DEFAULT_STORAGE",
                                                  "expiration_time": now_ms() + int(self.emu.presign_ttl * 1000)}})
        c = self.storage.temporary_credentials(self.storage.uc_bucket, mv["prefix"], write=write)
        # An R2 location gets `r2_temp_credentials` (same three fields, `R2Credentials` in MLflow's
        # databricks_uc_registry_messages.proto), used with S3's protocol against moto.
        kind = "r2_temp_credentials" if mv["storage_location"].startswith("r2://") else "aws_temp_credentials"
        return Response(200, {"credentials": {
            kind: {"access_key_id": c["access_key_id"], "secret_access_key": c["secret_access_key"],
                   "session_token": c["session_token"]},
            "expiration_time": int(c["expires_at"] * 1000), "storage_mode": "CUSTOMER_HOSTED"}})

    def finalize(self, req):
        full = self.full_name(req.arg("name"))
        mv = self._version(full, req.arg("version"))
        if mv["status"] != "PENDING_REGISTRATION":
            raise invalid(f"Model version {full}/{mv['version']} is {mv['status']} and cannot be finalized.")
        if self.storage.head(self.storage.uc_bucket, f"{mv['prefix']}/MLmodel") is None:
            raise invalid(f"Model version {full}/{mv['version']} cannot be finalized: no MLmodel file was "
                          f"found at its storage location {mv['storage_location']}.")
        mv["status"] = "READY"
        mv["updated"] = now_ms()
        return Response(200, {"model_version": self._version_json(mv)})

    def get_version(self, req):
        full = self.full_name(req.arg("name"))
        return Response(200, {"model_version": self._version_json(self._version(full, req.arg("version")))})

    def update_version(self, req):
        full = self.full_name(req.arg("name"))
        mv = self._version(full, req.arg("version"))
        if req.arg("description") is not None:
            mv["description"] = req.arg("description")
        mv["updated"] = now_ms()
        return Response(200, {"model_version": self._version_json(mv)})

    def delete_version(self, req):
        full = self.full_name(req.arg("name"))
        mv = self._version(full, req.arg("version"))
        with self._lock:
            self.versions[full].pop(mv["version"], None)
            for a, v in list(self.models[full]["aliases"].items()):
                if v == mv["version"]:
                    del self.models[full]["aliases"][a]
        return Response(200, {})

    def search_versions(self, req):
        flt = (req.arg("filter") or "").strip()
        if req.args("order_by"):
            raise invalid("Unity Catalog does not support order_by in model version search.")
        m = re.match(r"^(name|run_id)\s*=\s*'([^']*)'$", flt)
        if not m:
            raise invalid(f"Unsupported filter '{flt}'. Unity Catalog model version search supports only "
                          "\"name='<full name>'\" or \"run_id='<run id>'\".")
        field, value = m.groups()
        if field == "name":
            full = self.full_name(value)
            found = [self.versions[full][v] for v in sorted(self.versions[full], reverse=True)]
        else:
            found = [mv for vs in self.versions.values() for mv in vs.values() if mv["run_id"] == value]
        size = int(req.arg("max_results") or 10000)
        start = int(req.arg("page_token") or 0)
        out = {"model_versions": [self._version_json(mv) for mv in found[start:start + size]]}
        if start + size < len(found):
            out["next_page_token"] = str(start + size)
        return Response(200, out)

    def download_uri(self, req):
        full = self.full_name(req.arg("name"))
        mv = self._version(full, req.arg("version"))
        return Response(200, {"artifact_uri": mv["storage_location"]})

    def set_version_tag(self, req):
        full = self.full_name(req.arg("name"))
        mv = self._version(full, req.arg("version"))
        self.check_tag_key(req.arg("key"))
        mv["tags"][req.arg("key")] = req.arg("value") or ""
        return Response(200, {})

    def delete_version_tag(self, req):
        full = self.full_name(req.arg("name"))
        mv = self._version(full, req.arg("version"))
        mv["tags"].pop(req.arg("key"), None)
        return Response(200, {})

    # ---- /Models/... paths: Files API (SDK models repo) and default storage --------------------------
    def _models_path(self, path, write):
        parts = path.strip("/").split("/")
        if len(parts) < 5 or parts[0] != "Models":
            raise ApiError("NOT_FOUND", f"The path {path} does not exist.", status=404)
        full = self.full_name(".".join(parts[1:4]))
        mv = self._version(full, parts[4])
        rel = "/".join(parts[5:])
        if any(p in ("..", ".") for p in rel.split("/")):
            raise invalid(f"Invalid path {path}")
        if write and mv["status"] != "PENDING_REGISTRATION":
            raise ApiError("PERMISSION_DENIED", f"Model version {full}/{mv['version']} is {mv['status']}; its "
                           "files can no longer be written.", status=403)
        return mv, rel

    def fs_key(self, path, method):
        if not (self.emu.uc_sdk_models_repo or self.emu.uc_storage_mode == "DEFAULT_STORAGE"):
            raise ApiError("FEATURE_DISABLED", "The Files API is not enabled for Unity Catalog models in this "
                           "workspace.", status=403)
        mv, rel = self._models_path(path, write=method in ("PUT", "DELETE"))
        return self.storage, self.storage.uc_bucket, (f"{mv['prefix']}/{rel}" if rel else mv["prefix"])

    def presigned(self, path, write):
        """A presigned URL for a /Models/<c>/<s>/<m>/<v>/<file> path (Databricks default storage)."""
        if not (self.emu.uc_storage_mode == "DEFAULT_STORAGE" or self.emu.uc_sdk_models_repo):
            raise ApiError("FEATURE_DISABLED", "Default storage is not enabled in this workspace.", status=403)
        mv, rel = self._models_path(path, write)
        if not rel:
            raise invalid(f"Path {path} names a directory, not a file.")
        key = f"{mv['prefix']}/{rel}"
        if not write and self.storage.head(self.storage.uc_bucket, key) is None:
            raise ApiError("NOT_FOUND", "The file being accessed is not found.", status=404)
        url = self.storage.presign("put_object" if write else "get_object", self.storage.uc_bucket, key)
        return Response(200, {"url": url, "headers": list(self.emu.signed_url_headers)})

    # ---- grants ------------------------------------------------------------------------------------
    def _grant_target(self, req):
        if req.match.group("stype") != "function":
            raise invalid(f"Securable type {req.match.group('stype')} is not supported by the emulator; "
                          "models are securables of type 'function'.")
        return self.full_name(req.match.group("full"))

    def _assignments(self, full, effective=False):
        out = []
        grants = dict(self.grants[full])
        if effective:
            owner = self.models[full]["owner"]
            grants.setdefault(owner, set())
        for principal in sorted(grants):
            privs = sorted(grants[principal])
            if effective:
                items = [{"privilege": p} for p in privs]
                if principal == self.models[full]["owner"]:
                    items.append({"privilege": "ALL_PRIVILEGES"})
                out.append({"principal": principal, "privileges": items})
            elif privs:
                out.append({"principal": principal, "privileges": privs})
        return out

    def get_grants(self, req):
        full = self._grant_target(req)
        effective = req.match.group("kind") == "effective-permissions"
        mr = req.arg("max_results")
        if mr is not None and int(mr) != 0 and int(mr) < 150:
            raise invalid("max_results must be 0 (paginated) or at least 150.")
        return Response(200, {"privilege_assignments": self._assignments(full, effective)})

    def patch_grants(self, req):
        full = self._grant_target(req)
        known = self.emu.workspace_users | self.emu.groups | self.emu.service_principals
        changes = req.json.get("changes") or []
        for ch in changes:
            principal = ch.get("principal")
            if principal not in known:
                raise ApiError("PRINCIPAL_DOES_NOT_EXIST", f"Could not find principal with name {principal}.",
                               status=404)
            for p in (ch.get("add") or []) + (ch.get("remove") or []):
                if p not in UC_PRIVILEGES:
                    raise invalid(f"Privilege {p} is not applicable to this entity. Applicable privileges: "
                                  f"{', '.join(sorted(UC_PRIVILEGES))}")
        with self._lock:
            g = self.grants[full]
            for ch in changes:
                cur = g.setdefault(ch["principal"], set())
                cur |= set(ch.get("add") or [])
                cur -= set(ch.get("remove") or [])
                if not cur:
                    g.pop(ch["principal"], None)
        return Response(200, {"privilege_assignments": self._assignments(full)})
