"""Products with stock (merchants sell them; checkouts reserve their units)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy.ext.asyncio import AsyncConnection

from api.deps import CurrentUser, PaymentsDB
from api.schemas import CreateProduct, ProductOut
from db.engine import in_transaction
from db.repositories import commerce
from payweave.contracts.commerce import Product
from payweave.errors import NotFound
from payweave.ids import new_id

router = APIRouter(prefix="/v1/products", tags=["products"])


def product_out(p: Product) -> ProductOut:
    return ProductOut(
        id=p.id,
        merchant=p.merchant,
        name=p.name,
        price=p.price,
        currency=p.currency,
        stock=p.stock,
        available=p.available,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ProductOut)
async def create_product(
    body: CreateProduct, user: CurrentUser, db: PaymentsDB, response: Response
) -> ProductOut:
    user.require("products:write")

    async def work(conn: AsyncConnection) -> Product:
        return await commerce.create_product(
            conn,
            product_id=new_id("prod"),
            merchant=user.sub,
            name=body.name,
            price=body.price,
            currency=body.currency,
            stock=body.stock,
        )

    product = await in_transaction(db, work)
    response.headers["Location"] = f"/v1/products/{product.id}"
    return product_out(product)


@router.get("/{product_id}", response_model=ProductOut)
async def get_product(product_id: str, user: CurrentUser, db: PaymentsDB) -> ProductOut:
    async def work(conn: AsyncConnection) -> Product | None:
        return await commerce.get_product(conn, product_id)

    product = await in_transaction(db, work) if len(product_id) <= 64 else None
    if product is None:
        raise NotFound(f"product {product_id} not found")
    return product_out(product)
