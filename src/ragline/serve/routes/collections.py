"""A tenant's collections: any key of the tenant creates and lists them; deleting one (and with
it every document, job and evaluation in it) needs the admin key."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ragline.serve.deps import Caller, control_call, server_of, tenant_caller
from ragline.serve.errors import ApiError
from ragline.serve.schemas import CollectionIn
from ragline.serve.server import Server

router = APIRouter()


@router.post("/v1/tenants/{tenant}/collections", status_code=201, tags=["collections"])
def create_collection(tenant: str, body: CollectionIn, _: Caller = Depends(tenant_caller),
                      server: Server = Depends(server_of)) -> dict:
    return control_call(server.control.create_collection, tenant, body.name)


@router.get("/v1/tenants/{tenant}/collections", tags=["collections"])
def list_collections(tenant: str, who: Caller = Depends(tenant_caller), server: Server = Depends(server_of)) -> dict:
    out = []
    for c in server.control.collections(tenant):
        col = server.collection(tenant, c["name"])
        out.append({**c, "documents": len(col.documents(who.scope))})
    return {"collections": out}


@router.delete("/v1/tenants/{tenant}/collections/{collection}", tags=["collections"])
def delete_collection(tenant: str, collection: str, who: Caller = Depends(tenant_caller),
                      server: Server = Depends(server_of)) -> dict:
    if not who.admin:
        raise ApiError(403, "forbidden", "deleting a collection needs the admin key")
    server.drop_collection(tenant, collection)
    return {"deleted": collection}
