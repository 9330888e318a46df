"""The Databricks workspace emulator: one HTTP server on 127.0.0.1 in front of a real `mlflow
server` (tracking and workspace registry) and moto S3 (artifacts, UC model storage).

    emu = Emulator().start()        # emu.host == "http://127.0.0.1:PORT"
    env = {"DATABRICKS_HOST": emu.host, "DATABRICKS_TOKEN": emu.token}
    ...
    emu.stop()
"""
import logging
import secrets
import uuid

from .auth import Auth, OAuthError
from .backend import Backend
from .httpcore import HttpApp, Response, Router
from .storage import S3Storage, free_port
from .workspace import Workspace

logging.getLogger("werkzeug").setLevel(logging.ERROR)


class Emulator:
    """One emulated Databricks workspace (and its Unity Catalog metastore).

    Arguments (all optional):
      users               {token: user_name} personal access tokens; default one token for
                          alice@example.com
      oauth_clients       {client_id: client_secret} service principals for OAuth M2M; default one
      oauth_token_ttl     seconds an OAuth access token lives (default 3600)
      presign_ttl         seconds a presigned URL lives (default 300)
      temp_credentials_ttl seconds UC temporary credentials live (default 900)
      files_api           serve the Files API for MLflow artifact paths (default True); False answers
                          403 FEATURE_DISABLED so MLflow falls back to signed URLs
      credentials_page_size  credential_infos per credentials-for-read/write answer (default 1000)
      list_page_size      entries per artifacts/list, logged-model directories, fs/directories page
      extra_users, groups, extra_service_principals   principals the workspace knows (for ACLs)
      catalogs            {catalog: [schema, ...]} that exist in the UC metastore
                          (default {"main": ["default"]})
      uc_sdk_models_repo  answer true to is-databricks-sdk-models-artifact-repository-enabled (UC model
                          files through the Files API at /Models/...) (default False)
      uc_storage_mode     "CUSTOMER_HOSTED" (S3 temporary credentials, default) or "DEFAULT_STORAGE"
                          (presigned URLs from /api/2.0/fs/create-upload-url)
      ws_aliases          let the workspace registry accept alias calls (default False: WS has none)
      host_metadata       serve GET /.well-known/databricks-config (default True; the Databricks SDK
                          reads it first, then falls back to /oidc/.well-known/oauth-authorization-server)
      ws_registration_delay  seconds before a WS model version leaves PENDING_REGISTRATION (default 0)
      signed_url_headers  headers returned with each signed URL, [{"name":..., "value":...}]
      workspace_id        the x-databricks-org-id answered (default random 16 digits)
      uc_short_error_codes  UC answers NOT_FOUND (404) / ALREADY_EXISTS (409) instead of
                          RESOURCE_DOES_NOT_EXIST / RESOURCE_ALREADY_EXISTS (default False)
      uc_r2               the metastore is on Cloudflare R2: new UC versions are stored at
                          r2://<bucket>@<account>.r2.cloudflarestorage.com/... and get
                          r2_temp_credentials (served by moto, reached at emu.s3_endpoint) (default False)
      like_production     every real behaviour below that is modelled switched on (see README.md:
                          "Like production"); the per-behaviour arguments still override it
      expired_token_status  status of an expired OAuth token: 401, or 403 like production
      refuse_tokens_before_expiry  seconds before expiry from which tokens are refused (production:
                          30 % of the token's life, at most 30 s)
      uc_foreign_model_id "accept" (default) or "refuse": what UC create does with a model_id that is
                          no logged model of this workspace (real behaviour unknown)
      uc_return_dependencies  UC get answers carry feature_deps / model_version_dependencies as
                          created (default False: MLflow's ModelVersion proto has no such fields)
      name                a label used in bucket names
      region              the S3 region of the buckets (default us-west-2)
      port                port to listen on (default: a free one)
      model_credentials_without_path  answer logged-model credentials-for-upload/-download without
                          credential_info.path (default False). MLflow matches credentials to paths by
                          position (mlflow/store/artifact/databricks_artifact_repo.py,
                          _get_credential_infos) and never reads it; whether real workspaces send it
                          is UNKNOWN.
      files_api_list_404  the Files API answers 404 NOT_FOUND on every directory listing
                          (GET/HEAD fs/directories) of MLflow artifact paths (default False)
      files_api_files_403 the Files API answers 403 PERMISSION_DENIED on file reads and writes
                          (GET/HEAD/PUT fs/files) of MLflow artifact paths (default False). With
                          files_api_list_404, a workspace whose listing says "empty" but whose files
                          are refused: MLflow falls back per operation
                          (databricks_tracking_artifact_repo.py)
      files_api_max_put   largest body a single Files API PUT accepts (default 5 GiB, databricks-sdk
                          mixins/files.py _WORKSPACE_MAX_SINGLE_SHOT_SIZE); larger ones answer 413.
                          Larger files use the multipart routes (action=initiate-upload, ...)
      external_artifact_locations  keep an s3:// artifact_location given to experiments/create
                          (default False: Databricks chooses dbfs:/databricks/mlflow-tracking/<id>);
                          runs of such experiments have s3:// artifact roots that the credential
                          and Files APIs do not serve
      cloud               "aws" (default): run/logged-model/WS-registry artifacts in S3 with presigned
                          URLs; "azure": in Azure Blob (azurite) with SAS URLs (AZURE_SAS_URI). UC model
                          storage is S3 either way (azurite has no ADLS Gen2 endpoint).
    """

    def __init__(self, users=None, oauth_clients=None, oauth_token_ttl=3600.0, presign_ttl=300.0,
                 temp_credentials_ttl=900.0, files_api=True, credentials_page_size=1000, list_page_size=1000,
                 extra_users=(), groups=("admins", "users"), extra_service_principals=(), catalogs=None,
                 uc_sdk_models_repo=False, uc_storage_mode="CUSTOMER_HOSTED", ws_aliases=False,
                 ws_registration_delay=0.0, signed_url_headers=(), workspace_id=None, name="ws", port=0,
                 region="us-west-2", host_metadata=True, cloud="aws", uc_short_error_codes=None,
                 uc_r2=False, uc_foreign_model_id=None, uc_return_dependencies=False,
                 model_credentials_without_path=None, files_api_list_404=False, files_api_files_403=None,
                 files_api_max_put=5 * 1024 ** 3, external_artifact_locations=None,
                 expired_token_status=None, refuse_tokens_before_expiry=None, like_production=False):
        if users is None:
            users = {"dapi" + secrets.token_hex(16): "alice@example.com"}
        if oauth_clients is None:
            oauth_clients = {str(uuid.uuid4()): "dose" + secrets.token_hex(16)}
        self.users = dict(users)
        self.oauth_clients = dict(oauth_clients)
        self._oauth_token_ttl = float(oauth_token_ttl)
        # Like production (see auth.py for the sources): expired tokens answered 403, and
        # refused shortly before they expire (30 s of a real token's hour; scaled to a test's
        # short-lived tokens as 30 % of their life).
        self.like_production = like_production
        self.expired_token_status = expired_token_status or (403 if like_production else 401)
        if refuse_tokens_before_expiry is None:
            refuse_tokens_before_expiry = min(30.0, 0.3 * self._oauth_token_ttl) if like_production else 0.0
        self.refuse_tokens_before_expiry = float(refuse_tokens_before_expiry)
        self._presign_ttl = float(presign_ttl)
        self._temp_credentials_ttl = float(temp_credentials_ttl)
        self.auth = None
        self.files_api = files_api
        # Like production for artifacts: logged-model credentials without `path`, experiments with
        # their own artifact locations allowed. The Files API refusals stay switches of their own:
        # a listing's 404 on a full folder would leave MLflow's own client listing nothing, and
        # MLflow's signed-URL fallback for reads asks this emulator for '../artifacts/...' paths,
        # which it refuses, so MLflow's client could not check the copies (which a real
        # workspace does with those paths is UNKNOWN).
        if model_credentials_without_path is None:
            model_credentials_without_path = like_production
        if files_api_files_403 is None:
            files_api_files_403 = False
        if external_artifact_locations is None:
            external_artifact_locations = like_production
        self.model_credentials_without_path = model_credentials_without_path
        self.files_api_list_404 = files_api_list_404
        self.files_api_files_403 = files_api_files_403
        self.files_api_max_put = int(files_api_max_put)
        self.external_artifact_locations = external_artifact_locations
        self.credentials_page_size = int(credentials_page_size)
        self.list_page_size = int(list_page_size)
        self.workspace_users = set(self.users.values()) | set(extra_users)
        self.groups = set(groups) | {"admins", "users"}
        self.service_principals = set(self.oauth_clients) | set(extra_service_principals)
        self.catalogs = {c: list(s) for c, s in (catalogs or {"main": ["default"]}).items()}
        self.uc_sdk_models_repo = uc_sdk_models_repo
        self.uc_storage_mode = uc_storage_mode
        self.ws_aliases = ws_aliases
        # Like production also for Unity Catalog: the short error codes MLflow's client accepts
        # (which codes real UC answers is UNKNOWN: the stricter client-side case is modelled), and
        # a foreign model_id refused (what real UC does with one is UNKNOWN; MLflow clears it).
        if uc_short_error_codes is None:
            uc_short_error_codes = like_production
        if uc_foreign_model_id is None:
            uc_foreign_model_id = "refuse" if like_production else "accept"
        self.uc_short_error_codes = uc_short_error_codes
        self.uc_r2 = uc_r2
        if uc_foreign_model_id not in ("accept", "refuse"):
            raise ValueError("uc_foreign_model_id must be 'accept' or 'refuse'")
        self.uc_foreign_model_id = uc_foreign_model_id
        self.uc_return_dependencies = uc_return_dependencies
        self.host_metadata = host_metadata
        if cloud not in ("aws", "azure"):
            raise ValueError("cloud must be 'aws' or 'azure'")
        self.cloud = cloud
        self.ws_storage = None
        self.ws_registration_delay = float(ws_registration_delay)
        self.signed_url_headers = list(signed_url_headers)
        self.workspace_id = str(workspace_id or (10**15 + secrets.randbelow(9 * 10**15)))
        self.name = name
        self.region = region
        self._port = port or free_port()
        self.host = f"http://127.0.0.1:{self._port}"
        self.backend = None
        self.storage = None
        self.uc = None
        self.app = None

    # ---- switches that tests may flip while the emulator runs ------------------------------------
    @property
    def oauth_token_ttl(self):
        return self._oauth_token_ttl

    @oauth_token_ttl.setter
    def oauth_token_ttl(self, v):
        self._oauth_token_ttl = float(v)
        if self.auth:
            self.auth.oauth_token_ttl = float(v)

    @property
    def presign_ttl(self):
        return self._presign_ttl

    @presign_ttl.setter
    def presign_ttl(self, v):
        self._presign_ttl = float(v)
        for st in (self.storage, self.ws_storage):
            if st:
                st.presign_ttl = float(v)

    @property
    def temp_credentials_ttl(self):
        return self._temp_credentials_ttl

    @temp_credentials_ttl.setter
    def temp_credentials_ttl(self, v):
        self._temp_credentials_ttl = float(v)
        if self.storage:
            self.storage.temp_credentials_ttl = float(v)

    # ---- convenience ------------------------------------------------------------------------------
    @property
    def token(self):
        return next(iter(self.users))

    @property
    def user(self):
        return self.users[self.token]

    @property
    def client_id(self):
        return next(iter(self.oauth_clients))

    @property
    def client_secret(self):
        return self.oauth_clients[self.client_id]

    @property
    def bucket(self):
        """The workspace root bucket (S3) or container (Azure) of run and logged-model artifacts."""
        return self.ws_storage.bucket

    @property
    def ws_storage_endpoint(self):
        """Where workspace artifact signed URLs point (== s3_endpoint unless cloud="azure")."""
        return self.ws_storage.endpoint

    @property
    def uc_bucket(self):
        return self.storage.uc_bucket

    @property
    def s3_endpoint(self):
        """The storage endpoint clients reach (the strict proxy in front of moto)."""
        return self.storage.endpoint

    @property
    def requests(self):
        """Every API request: {time, method, path, auth ("pat"/"oauth"/"none"/...), user, status}."""
        return list(self.app.requests)

    def storage_requests(self):
        """Every request that reached storage: {time, method, path, query, auth, has_bearer, status}."""
        reqs = self.storage.storage_requests()
        if self.ws_storage is not None and self.ws_storage is not self.storage:
            reqs = sorted(reqs + self.ws_storage.storage_requests(), key=lambda r: r["time"])
        return reqs

    # ---- fault injection ----------------------------------------------------------------------------
    def inject_api_error(self, path_regex, status=503, error_code="TEMPORARILY_UNAVAILABLE",
                         message="injected by the emulator", method=None, times=1, headers=None,
                         seconds=None, performed=False):
        """The next `times` API requests whose path matches answer this error (checked after routing,
        before authentication), e.g. inject_api_error("/runs/log-batch", 429, "REQUEST_LIMIT_EXCEEDED",
        headers={"Retry-After": "1"}). With `seconds`, every matching request answers it for that long
        from the first one (a throttled API). With `performed`, the request takes effect and the
        error is answered after (a create that happened although its answer says 500).
        Returns the fault; its "hits" counts the requests a `seconds` fault answered."""
        import re
        fault = {"method": method, "rx": re.compile(path_regex), "status": status, "times": times,
                 "body": {"error_code": error_code, "message": message}, "headers": headers or {},
                 "seconds": seconds, "performed": performed}
        self.app.faults.append(fault)
        return fault

    def throttle(self, path_regex, seconds, method="POST"):
        """Real workspaces answer bursts with `429 REQUEST_LIMIT_EXCEEDED` (documented under "Rate
        limits" in the Databricks REST API reference; MLflow's `environment_variables.py` sets 7
        retries because "it's common for MLflow backends to rate limit requests for more than 1
        minute"). Whether a real 429 carries Retry-After is UNKNOWN: this one does not (the worst
        case for a client)."""
        return self.inject_api_error(path_regex, 429, "REQUEST_LIMIT_EXCEEDED",
                                     "Too many requests. Please wait a moment and try again.",
                                     method=method, seconds=seconds)

    def inject_storage_error(self, path_regex, status=503, code="SlowDown", message="Please reduce your request rate.",
                             method=None, times=1):
        """The next `times` storage requests whose path (/<bucket>/<key>, or /<account>/<container>/<blob>
        on Azure) matches answer this S3 (or Azure) error."""
        import re
        for st in {id(self.storage): self.storage, id(self.ws_storage): self.ws_storage}.values():
            st.faults.append({"method": method, "rx": re.compile(path_regex), "status": status,
                              "code": code, "message": message, "times": times})

    def pat_env(self):
        return {"DATABRICKS_HOST": self.host, "DATABRICKS_TOKEN": self.token}

    def oauth_env(self):
        return {"DATABRICKS_HOST": self.host, "DATABRICKS_CLIENT_ID": self.client_id,
                "DATABRICKS_CLIENT_SECRET": self.client_secret}

    # ---- lifecycle --------------------------------------------------------------------------------
    def start(self):
        """Start the backing mlflow server, storage and the API server; returns self (emu.host is set)."""
        self._launch()
        self._finish()
        Backend.replenish()
        return self

    def _launch(self):
        self.backend = Backend.take()

    def _finish(self):
        try:
            self.storage = S3Storage(region=self.region, presign_ttl=self._presign_ttl,
                                     temp_credentials_ttl=self._temp_credentials_ttl, name=self.name)
            if self.cloud == "azure":
                from .azure_storage import AzureBlobStorage
                self.ws_storage = AzureBlobStorage(presign_ttl=self._presign_ttl, name=self.name)
            else:
                self.ws_storage = self.storage
            self.auth = Auth(self.users, self.oauth_clients, self._oauth_token_ttl,
                             expired_status=self.expired_token_status,
                             refuse_before_expiry=self.refuse_tokens_before_expiry)
            self.backend.wait()
            self.ws = Workspace(self)
            from .unity_catalog import UnityCatalog
            self.uc = UnityCatalog(self)
            self.app = HttpApp(self._routes(), self.auth.authenticate,
                               extra_headers={"x-databricks-org-id": self.workspace_id})
            self.app.serve(self._port)
        except Exception:
            self.stop()
            raise
        return self

    @staticmethod
    def start_all(*emulators):
        """Start several emulators, their backing mlflow servers booting in parallel."""
        for e in emulators:
            e._launch()
        try:
            started = [e._finish() for e in emulators]
        except Exception:
            for e in emulators:
                e.stop()
            raise
        Backend.replenish()
        return started

    def stop(self):
        if self.app:
            self.app.shutdown()
            self.app = None
        if self.ws_storage is not None and self.ws_storage is not self.storage:
            self.ws_storage.close()
        self.ws_storage = None
        if self.storage:
            self.storage.close()
            self.storage = None
        if self.backend:
            self.backend.stop()
            self.backend = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- discovery and tokens -----------------------------------------------------------------------
    def _oidc_metadata(self, req):
        base = f"http://{req.host}"
        return Response(200, {
            "issuer": f"{base}/oidc", "authorization_endpoint": f"{base}/oidc/v1/authorize",
            "token_endpoint": f"{base}/oidc/v1/token", "jwks_uri": f"{base}/oidc/jwks.json",
            "grant_types_supported": ["client_credentials", "authorization_code", "refresh_token"],
            "response_types_supported": ["code"], "scopes_supported": ["all-apis", "offline_access"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"]})

    def _databricks_config(self, req):
        if not self.host_metadata:
            from .errors import no_endpoint
            raise no_endpoint(req.method, req.path)
        return Response(200, {"oidc_endpoint": f"http://{req.host}/oidc", "workspace_id": self.workspace_id,
                              "cloud": "aws"})

    def _token(self, req):
        from urllib.parse import parse_qs
        form = {k: v[0] for k, v in parse_qs(req.body.decode(errors="replace")).items()}
        try:
            return Response(200, self.auth.issue(req.headers, form))
        except OAuthError as e:
            return Response(e.status, e.body)

    # ---- routes -----------------------------------------------------------------------------------
    def _routes(self):
        r = Router()
        ws, uc = self.ws, self.uc
        M = "/api/2.0/mlflow"
        r.add("GET", r"/\.well-known/databricks-config", self._databricks_config, auth=False)
        r.add("GET", r"/oidc/\.well-known/oauth-authorization-server", self._oidc_metadata, auth=False)
        r.add("POST", r"/oidc/v1/token", self._token, auth=False)
        # workspace
        r.add("POST", r"/api/2.0/workspace/mkdirs", ws.mkdirs)
        r.add("GET", r"/api/2.0/workspace/get-status", ws.get_status)
        r.add("GET", r"/api/2.0/workspace/list", ws.list_dir)
        r.add("GET", r"/api/2.0/preview/scim/v2/Me", ws.me)
        # tracking with Databricks rules
        r.add("POST", M + r"/experiments/create", ws.create_experiment)
        r.add("GET", M + r"/experiments/get-by-name", ws.get_experiment_by_name)
        r.add("POST", M + r"/experiments/update", ws.update_experiment)
        r.add("POST", M + r"/experiments/set-experiment-tag", ws.set_experiment_tag)
        r.add("GET|POST", M + r"/experiments/search", ws.search_experiments)
        r.add("POST", M + r"/runs/create", ws.create_run)
        r.add("POST", M + r"/runs/set-tag", ws.set_run_tag)
        r.add("POST", M + r"/runs/log-batch", ws.log_batch)
        # run and logged-model artifacts
        r.add("POST|GET", M + r"/artifacts/credentials-for-read", lambda q: ws.run_credentials(q, False))
        r.add("POST|GET", M + r"/artifacts/credentials-for-write", lambda q: ws.run_credentials(q, True))
        r.add("GET", M + r"/artifacts/list", ws.list_run_artifacts)
        r.add("POST", M + r"/artifacts/create-multipart-upload", ws.create_multipart)
        r.add("GET|POST", M + r"/artifacts/get-presigned-upload-part-url", ws.presigned_part_url)
        r.add("POST", M + r"/artifacts/complete-multipart-upload", ws.complete_multipart)
        r.add("POST|GET", M + r"/logged-models/(?P<model_id>[^/]+)/artifacts/credentials-for-upload",
              lambda q: ws.model_credentials(q, True))
        r.add("POST|GET", M + r"/logged-models/(?P<model_id>[^/]+)/artifacts/credentials-for-download",
              lambda q: ws.model_credentials(q, False))
        r.add("GET", M + r"/logged-models/(?P<model_id>[^/]+)/artifacts/directories", ws.list_model_artifacts)
        # Files API
        r.add("PUT", r"/api/2.0/fs/files(?P<path>/.+)", ws.fs_put)
        r.add("POST", r"/api/2.0/fs/files(?P<path>/.+)", ws.fs_action)
        r.add("POST", r"/api/2.0/fs/create-upload-part-urls", ws.fs_part_urls)
        r.add("GET|HEAD", r"/api/2.0/fs/files(?P<path>/.+)", ws.fs_get)
        r.add("DELETE", r"/api/2.0/fs/files(?P<path>/.+)", ws.fs_delete)
        r.add("GET|HEAD", r"/api/2.0/fs/directories(?P<path>/.+)", ws.fs_dir)
        r.add("POST", r"/api/2.0/fs/create-upload-url", lambda q: ws.fs_presigned(q, True))
        r.add("POST", r"/api/2.0/fs/create-download-url", lambda q: ws.fs_presigned(q, False))
        # experiment traces: StartTraceV3, search, info, assessments, trace-data credentials; no
        # OTLP, no V4 search, no traces/get (traces.py; before the catch-all passthroughs)
        from . import traces
        traces.add_routes(r, ws)
        # Unity Catalog registry (before the generic registry routes)
        uc.add_routes(r)
        # workspace registry
        r.add("POST", M + r"/registered-models/create", ws.create_registered_model)
        r.add("POST", M + r"/registered-models/rename", ws.rename_registered_model)
        r.add("DELETE", M + r"/registered-models/delete", ws.delete_registered_model)
        r.add("DELETE", M + r"/model-versions/delete", ws.delete_model_version)
        r.add("POST|DELETE|GET", M + r"/registered-models/alias", ws.ws_alias)
        r.add("POST", M + r"/model-versions/create", ws.create_model_version)
        r.add("GET", M + r"/model-versions/get-download-uri", ws.get_download_uri)
        r.add("GET", M + r"/model-versions/list-artifacts", ws.mv_list_artifacts)
        r.add("GET", M + r"/model-versions/get-signed-download-uri", ws.mv_signed_download_uri)
        r.add("GET", M + r"/databricks/registered-models/get", ws.databricks_get_registered_model)
        r.add("POST", M + r"/databricks/model-versions/transition-stage", ws.databricks_transition_stage)
        r.add("GET|POST|PATCH|DELETE", M + r"/(registered-models|model-versions)/.+", ws.registry_passthrough)
        # permissions
        P = r"/api/2.0/permissions/(?P<otype>registered-models|experiments)/(?P<oid>[^/]+)"
        r.add("GET", P, ws.get_permissions)
        r.add("GET", P + "/permissionLevels", ws.permission_levels)
        r.add("PATCH", P, lambda q: ws.set_permissions(q, replace=False))
        r.add("PUT", P, lambda q: ws.set_permissions(q, replace=True))
        # everything else MLflow tracking: forwarded
        r.add("GET|POST|PATCH|DELETE", M + r"/.+", ws.passthrough)
        r.add("GET", r"/api/3\.0/mlflow/.+", ws.passthrough)
        return r
