"""Tenants and their API keys (the admin key), and ``whoami`` for any key of the tenant."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ragline.serve.deps import Caller, admin, control_call, server_of, tenant_caller
from ragline.serve.errors import ApiError
from ragline.serve.schemas import KeyIn, TenantIn
from ragline.serve.server import Server

router = APIRouter()


# -- tenants ---------------------------------------------------------------------------------
@router.post("/v1/tenants", status_code=201, tags=["tenants"])
def create_tenant(body: TenantIn, _: Caller = Depends(admin), server: Server = Depends(server_of)) -> dict:
    return control_call(server.control.create_tenant, body.name)


@router.get("/v1/tenants", tags=["tenants"])
def list_tenants(_: Caller = Depends(admin), server: Server = Depends(server_of)) -> dict:
    return {"tenants": server.control.tenants()}


@router.delete("/v1/tenants/{tenant}", tags=["tenants"])
def delete_tenant(tenant: str, _: Caller = Depends(admin), server: Server = Depends(server_of)) -> dict:
    if not server.control.tenant_exists(tenant):
        raise ApiError(404, "not_found", f"no tenant '{tenant}'")
    server.drop_tenant(tenant)
    return {"deleted": tenant}


# -- keys ------------------------------------------------------------------------------------
@router.post("/v1/tenants/{tenant}/keys", status_code=201, tags=["keys"])
def create_key(tenant: str, body: KeyIn, _: Caller = Depends(admin), server: Server = Depends(server_of)) -> dict:
    if not server.control.tenant_exists(tenant):
        raise ApiError(404, "not_found", f"no tenant '{tenant}'")
    key, info = control_call(server.control.create_key, tenant, body.name, body.principals, body.kind)
    return {"key": key, **info.public(), "note": "the key is shown only now; it is stored hashed"}


@router.get("/v1/tenants/{tenant}/keys", tags=["keys"])
def list_keys(tenant: str, _: Caller = Depends(admin), server: Server = Depends(server_of)) -> dict:
    return {"keys": [k.public() for k in server.control.keys(tenant)]}


@router.delete("/v1/tenants/{tenant}/keys/{key_id}", tags=["keys"])
def revoke_key(tenant: str, key_id: str, _: Caller = Depends(admin), server: Server = Depends(server_of)) -> dict:
    if not server.control.revoke_key(tenant, key_id):
        raise ApiError(404, "not_found", f"no key '{key_id}' in tenant '{tenant}'")
    return {"revoked": key_id}


@router.get("/v1/tenants/{tenant}/whoami", tags=["keys"])
def whoami(tenant: str, who: Caller = Depends(tenant_caller)) -> dict:
    return {**who.public(), "tenant": tenant}
