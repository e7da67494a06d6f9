"""A small FastAPI service on acacheorm: users, articles and collections.

Run it with ``uvicorn examples.fastapi_app.app:app`` (the backend comes from
``ACACHEORM_URL``, default ``memory://``), or build one with ``create_app(url)``.
"""

import asyncio
import os
from typing import Any

import pydantic
from fastapi import FastAPI, HTTPException, Query, Response, status

import acacheorm as co

from .models import BACKEND, Article, Collection, User

#: At most this many ids in one ``GET /articles?ids=...``.
MAX_IDS = 100

# Request and response bodies, from the models' fields.
UserIn = User.pydantic_model(name="UserIn", exclude=["created_at"])
UserPatch = User.pydantic_model(name="UserPatch", partial=True, exclude=["id", "created_at"])
UserOut = User.pydantic_model(name="User")
ArticleIn = Article.pydantic_model(name="ArticleIn")
ArticlePatch = Article.pydantic_model(name="ArticlePatch", partial=True, exclude=["id"])
ArticleOut = Article.pydantic_model(name="Article")
ArticleWithAuthor = pydantic.create_model(
    "ArticleWithAuthor",
    __base__=Article.pydantic_model(name="ArticleFields", exclude=["author"]),
    author_id=(int, ...),
    author=(UserOut | None, ...),  # None when the author's row is gone
)
CollectionIn = Collection.pydantic_model(name="CollectionIn")
CollectionOut = Collection.pydantic_model(name="Collection")


def with_author(article: Article) -> Any:
    author = article.author
    return ArticleWithAuthor(
        **{k: v for k, v in article.to_dict().items() if k != "author"},
        author_id=article.author_id,
        author=None if author.is_sparse else UserOut.model_validate(author),
    )


def create_app(url: str | None = None) -> FastAPI:
    """The service, storing its rows in the backend at ``url`` (default: ``ACACHEORM_URL``,
    else ``memory://``). Nothing connects before the app starts.

    Example::

        app = create_app("redis://127.0.0.1:6379/0?namespace=blog")
    """
    url = url or os.environ.get("ACACHEORM_URL", "memory://")
    backend = co.backend_from_url(url)
    app = FastAPI(
        title="acacheorm example",
        # Configures the models' named backend at startup, checks it, closes it at shutdown.
        lifespan=co.lifespan(**{BACKEND: backend}),
    )
    co.install_exception_handlers(app)  # DoesNotExist → 404, ValidationError → 422, ...
    app.state.backend = backend

    # -- users ------------------------------------------------------------------------------

    @app.post("/users", status_code=status.HTTP_201_CREATED, response_model=UserOut)
    async def create_user(body: UserIn) -> Any:
        values = body.model_dump()
        user, created = await User.get_or_create(id=values.pop("id"), defaults=values)
        if not created:
            raise HTTPException(status.HTTP_409_CONFLICT, f"user {user.id} already exists")
        return user

    @app.get("/users/{user_id}", response_model=UserOut)
    async def read_user(user_id: int) -> Any:
        return await User.get(id=user_id)  # a miss raises User.DoesNotExist → 404

    @app.patch("/users/{user_id}", response_model=UserOut)
    async def update_user(user_id: int, body: UserPatch) -> Any:
        # Only the fields sent; an explicit null for a required field is refused by the
        # model (acacheorm ValidationError → 422). The update is atomic and keeps the TTL.
        return await User.set_by_id(user_id, body.model_dump(exclude_unset=True))

    @app.delete("/users/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
    async def delete_user(user_id: int) -> Response:
        await User.delete_by_id(user_id)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    # -- articles ---------------------------------------------------------------------------

    @app.post("/articles", status_code=status.HTTP_201_CREATED, response_model=ArticleOut)
    async def create_article(body: ArticleIn) -> Any:
        values = body.model_dump()
        if await User.get_or_none(id=values["author"]) is None:
            raise HTTPException(422, f"author {values['author']} does not exist")
        article, created = await Article.get_or_create(id=values.pop("id"), defaults=values)
        if not created:
            raise HTTPException(status.HTTP_409_CONFLICT, f"article {article.id} already exists")
        return article

    @app.get("/articles", response_model=list[ArticleWithAuthor | None])
    async def read_articles(
        ids: str = Query(description="comma-separated article ids, e.g. 1,2,3"),
    ) -> Any:
        try:
            pks = [int(part) for part in ids.split(",") if part.strip()]
        except ValueError:
            raise HTTPException(422, "ids are comma-separated integers") from None
        if not pks or len(pks) > MAX_IDS:
            raise HTTPException(422, f"give between 1 and {MAX_IDS} ids")
        # One multi-get for the articles, one for every distinct author.
        articles = await Article.query_many(*pks).select_related("author")
        return [None if a is None else with_author(a) for a in articles]

    @app.get("/articles/{article_id}", response_model=ArticleWithAuthor)
    async def read_article(article_id: int) -> Any:
        return with_author(await Article.get(id=article_id).select_related("author"))

    @app.patch("/articles/{article_id}", response_model=ArticleOut)
    async def update_article(article_id: int, body: ArticlePatch) -> Any:
        return await Article.set_by_id(article_id, body.model_dump(exclude_unset=True))

    @app.delete("/articles/{article_id}", status_code=status.HTTP_204_NO_CONTENT)
    async def delete_article(article_id: int) -> Response:
        await Article.delete_by_id(article_id)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    # -- collections ------------------------------------------------------------------------

    @app.post("/collections", status_code=status.HTTP_201_CREATED, response_model=CollectionOut)
    async def create_collection(body: CollectionIn) -> Any:
        values = body.model_dump()
        # Both lookups are awaited together, so they go out in one round trip.
        collector, article = await asyncio.gather(
            User.get_or_none(id=values["collector"]),
            Article.get_or_none(id=values["article"]),
        )
        if collector is None or article is None:
            missing = "collector" if collector is None else "article"
            raise HTTPException(422, f"{missing} {values[missing]} does not exist")
        return await Collection.create(**values)

    @app.get("/collections/{collector}/{article}", response_model=CollectionOut)
    async def read_collection(collector: int, article: int) -> Any:
        return await Collection.get(collector=collector, article=article)

    @app.delete("/collections/{collector}/{article}", status_code=status.HTTP_204_NO_CONTENT)
    async def delete_collection(collector: int, article: int) -> Response:
        await Collection.delete_by_id((collector, article))
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    return app


#: For ``uvicorn examples.fastapi_app.app:app``.
app = create_app()
