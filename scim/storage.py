"""A SQLAlchemy :class:`~scim2_server.storage.ScimStorage` over our tables.

Users are rows of the foundation's ``users`` table, so the ``active`` flag the
login path reads is the one SCIM writes. Groups are ``groups`` rows, their
members ``group_members`` rows. Each row keeps the resource as the client last
wrote it (``scim_resource``), less what columns hold (``id``, ``meta``,
``members``) and less the ``password``, which devicetrust never stores.

What SQL does, and what it leaves to scim2-models:

- Uniqueness is the database's: ``users.user_name_lower`` and
  ``groups.display_name_key`` are UNIQUE and hold the name under
  :func:`idp_service.platform.identity.name_key` (NFC, case folding), the one
  normalisation every other look-up uses too, so two replicas cannot both win
  and look-alike spellings (``straße``/``strasse``, a long s) are one name.
  A name mixing scripts with confusable characters is refused.
- ``meta.version`` is a per-row counter, ``W/"n"``; an update checks it in
  the same UPDATE statement, so If-Match holds across replicas.
- A search narrows the rows in SQL where the filter allows it (``eq`` on
  userName, externalId, id, group displayName, joined by ``and``/``or``), then
  :meth:`ScimFilter.match <scim2_models.ScimFilter.match>` decides. SQL never
  has to agree with scim2-models on case, Unicode or multi-valued semantics;
  it only has to keep a superset. A search without filter and sort pages in
  SQL; any other is sorted by :meth:`SearchRequest.sort
  <scim2_models.SearchRequest.sort>` over the matching rows.

Outside a request (the storage contract tests), each call is its own
transaction. Inside one, :mod:`scim.app` binds a session with :meth:`bind`,
and every call joins it, so the SCIM write, its device effects and its audit
events commit together.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from types import SimpleNamespace
from typing import Any, Union, cast

from scim2_models import (
    AttributeBinding,
    ConflictException,
    Context,
    InvalidCursorException,
    InvalidFilterException,
    InvalidValueException,
    NotFoundException,
    NotImplementedException,
    Path,
    PreconditionFailedException,
    Resource,
    ResourceType,
    ResponseParameters,
    ScimFilter,
    ScimProvider,
    SearchRequest,
    UniquenessException,
)
from scim2_models.path import (
    CompareOperator,
    Comparison,
    LogicalExpr,
    LogicalOperator,
    Not,
    ValuePath,
)
from scim2_server.storage import ScimStorage, SearchPage
from scim2_server.utils import parametrize
from sqlalchemy import ColumnElement, and_, bindparam, false, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idp_service.directory.sessions import end_where_not_admin
from idp_service.directory.tables import Group, GroupMember
from idp_service.platform.db import Database
from idp_service.platform.identity import (
    DELETED_PREFIX,
    ConfusableName,
    check_identifier,
    name_key,
    reserved_reason,
)
from idp_service.platform.models import User, table_of, utcnow
from scim import lifecycle
from scim.lifecycle import Reactivation
from scim.provider import GROUP_SCHEMA, USER_SCHEMA

USERS = table_of(User)
GROUPS = table_of(Group)
MEMBERS = table_of(GroupMember)
# Attributes that never reach the database.
NOT_STORED = {"id", "meta", "password"}
# The indexed columns a filter's ``eq`` can be answered from, by attribute URN:
# (column, the attribute whose comparison key the column holds, if any).
INDEXED: dict[str, dict[str, tuple[Any, str | None]]] = {
    "User": {
        f"{USER_SCHEMA}:userName": (USERS.c.user_name_lower, "userName"),
        f"{USER_SCHEMA}:externalId": (USERS.c.external_id, "externalId"),
        f"{USER_SCHEMA}:id": (USERS.c.id, None),
    },
    "Group": {
        f"{GROUP_SCHEMA}:displayName": (GROUPS.c.display_name_key, "displayName"),
        f"{GROUP_SCHEMA}:externalId": (GROUPS.c.external_id, "externalId"),
        f"{GROUP_SCHEMA}:id": (GROUPS.c.id, None),
    },
}
# Statements run on most requests, built once (building one costs more CPU
# than PostgreSQL spends running it).
USER_BY = {
    column.key: select(USERS).where(USERS.c.deleted_at.is_(None), column == bindparam("value"))
    for column, _ in INDEXED["User"].values()
}
INSERT_USER = USERS.insert()


@dataclass
class Scope:
    """The request a storage call belongs to: its session, and who is acting."""

    session: Session
    actor: str | None = None
    bulk: bool = False


def version_tag(version: int) -> str:
    """The weak ETag of a row version (RFC 7644 §3.14)."""
    return f'W/"{version}"'


@cache
def _binding(model: type[Resource[Any]], attribute: str) -> AttributeBinding:
    return cast(AttributeBinding, parametrize(Path, model)(attribute).resolve())


def comparison_key(model: type[Resource[Any]], attribute: str, value: str) -> str:
    """``value`` as scim2-models compares it (NFC, case-folded unless caseExact)."""
    return cast(str, _binding(model, attribute).comparable(value))


# The most comparisons (``eq``, ``pr``...) a search filter may hold. Okta and Entra ID
# send one; SQLite refuses the SQL of about a thousand (its expression depth limit), and
# each one costs Python time per user when the filter cannot be answered from an index.
MAX_FILTER_TERMS = 200
# Larger than any table, small enough for SQL OFFSET/LIMIT (a signed 64-bit integer).
_MAX_OFFSET = 2**62

# Attributes whose columns hold identity.name_key, not scim2-models' comparison key.
# name_key equates at least what scim2-models equates, so an ``eq`` narrowed on it in
# SQL still keeps a superset of the rows the filter matches.
NAME_KEYED = {"userName", "displayName"}


def column_key(model: type[Resource[Any]], attribute: str, value: str) -> str:
    """``value`` as the indexed column of ``attribute`` holds it."""
    if attribute in NAME_KEYED:
        comparison_key(model, attribute, value)  # a value scim2-models cannot compare is refused
        return name_key(value)
    return comparison_key(model, attribute, value)


def _identifier(value: str, attribute: str) -> str:
    """The key of a userName or displayName; refused when it mixes look-alike scripts,
    or is one the service reserves for a deleted user's row."""
    reserved = reserved_reason(value, attribute)
    if reserved is not None:
        raise InvalidValueException(detail=reserved)
    try:
        check_identifier(value)
    except ConfusableName:
        raise InvalidValueException(
            detail=f"{attribute} mixes scripts with look-alike characters, or holds control"
            " or invisible formatting characters"
        ) from None
    return name_key(value)


class SqlStorage(ScimStorage):
    """Users and groups in SQL, for scim2-server's handler.

    :param db: The service's database.
    :param provider: The description of the service (:func:`scim.provider.build_provider`).
    :param reactivation: What reactivating a user does to their devices.
    """

    supports_cursors = False

    def __init__(
        self,
        db: Database,
        provider: ScimProvider,
        *,
        reactivation: Reactivation | str = Reactivation.require_approval,
        admin_group: str = "devicetrust-admins",
    ) -> None:
        self.db = db
        self.admin_group = admin_group
        self.provider = provider
        self.reactivation = Reactivation(reactivation)
        self._scope: ContextVar[Scope | None] = ContextVar(f"scim_scope_{id(self)}", default=None)
        types = {rt.id: rt for rt in provider.resource_types}
        self.user_model = cast(type[Resource[Any]], provider.model_for(types["User"]))
        self.group_model = cast(type[Resource[Any]], provider.model_for(types["Group"]))

    # -- Transactions ----------------------------------------------------

    @contextmanager
    def bind(self, session: Session, actor: str | None = None) -> Iterator[Scope]:
        """Make every call in the block use ``session`` (one request, one transaction)."""
        scope = Scope(session, actor)
        token = self._scope.set(scope)
        try:
            yield scope
        finally:
            self._scope.reset(token)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        scope = self._scope.get()
        if scope is not None:
            yield scope.session
            return
        with self.db.session() as session:
            yield session

    @property
    def _actor(self) -> str | None:
        scope = self._scope.get()
        return scope.actor if scope else None

    @contextmanager
    def operation(self) -> Iterator[None]:
        """One SCIM operation; in a bulk request on PostgreSQL, a savepoint, so a
        failed operation does not abort the ones after it.

        A single request needs none (its failure rolls the request back), and
        SQLite needs none: a failed statement there undoes only itself, and an
        operation writes nothing before the statement that can fail.
        """
        scope = self._scope.get()
        if scope is None or not scope.bulk or not self.db.is_postgres:
            with nullcontext():
                yield
            return
        with scope.session.begin_nested():
            yield

    # -- Resource types --------------------------------------------------

    def _kind(self, resource_type: ResourceType) -> str:
        if resource_type.id in ("User", "Group"):
            return resource_type.id
        raise NotImplementedException(detail=f"no storage for {resource_type.id!r}")

    # -- Reads -----------------------------------------------------------

    def get(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        response_parameters: ResponseParameters[Any] | None = None,
    ) -> Resource[Any]:
        kind = self._kind(resource_type)
        if _has_nul(resource_id):
            raise NotFoundException(detail=f"{kind} not found")
        with self._session() as session:
            if kind == "User":
                row = session.connection().execute(USER_BY["id"], {"value": resource_id}).first()
                if row is not None:
                    return self._user_resource(row)
            else:
                group = session.get(Group, resource_id)
                if group is not None:
                    return self._group_resources(session, [group])[0]
        raise NotFoundException(detail=f"{kind} {resource_id!r} not found")

    def search(
        self,
        resource_types: list[ResourceType],
        search_request: SearchRequest[Any],
        *,
        position: Any = None,
    ) -> SearchPage:
        if position is not None or search_request.cursor is not None:
            raise InvalidCursorException(detail="cursor pagination is not supported")
        kinds = list(dict.fromkeys(self._kind(rt) for rt in resource_types))
        scim_filter = search_request.filter
        if scim_filter is not None and _comparisons(scim_filter.ast) > MAX_FILTER_TERMS:
            raise InvalidFilterException(
                detail=f"a filter may hold at most {MAX_FILTER_TERMS} comparisons"
            )
        # Paging past any table is an empty page, never a number the database refuses.
        start = min(search_request.start_index_0 or 0, _MAX_OFFSET)
        count = None if search_request.count is None else min(search_request.count, _MAX_OFFSET)
        with self._session() as session:
            if len(kinds) == 1 and scim_filter is None and search_request.sort_by is None:
                return self._sql_page(session, kinds[0], start, count)
            looked_up = (
                self._user_lookup(session, scim_filter)
                if kinds == ["User"] and scim_filter is not None
                else None
            )
            exact = looked_up is not None
            candidates: list[Resource[Any]] = looked_up or []
            for kind in kinds if looked_up is None else []:
                narrowing, exact = (
                    self._narrowing(kind, scim_filter) if len(kinds) == 1 else (None, False)
                )
                candidates += self._load(session, kind, narrowing)
        if scim_filter is not None and not exact:
            if not scim_filter.models and candidates:
                models = tuple(dict.fromkeys(type(r) for r in candidates))
                scim_filter = parametrize(ScimFilter, Union[models])(str(scim_filter))  # noqa: UP007
            candidates = [r for r in candidates if scim_filter.match(r)]
        candidates.sort(key=lambda r: cast(str, r.id))
        found = search_request.sort(candidates)
        stop = None if count is None else start + count
        return SearchPage(len(found), found[start:stop])

    def _sql_page(self, session: Session, kind: str, start: int, count: int | None) -> SearchPage:
        """A page of every resource of a type, in id order, counted and sliced in SQL."""
        if kind == "User":
            alive = User.deleted_at.is_(None)
            total = session.scalar(select(func.count()).select_from(User).where(alive)) or 0
            query = select(USERS).where(alive).order_by(self._by_id(User.id))
        else:
            total = session.scalar(select(func.count()).select_from(Group)) or 0
            query = select(Group).order_by(self._by_id(Group.id))
        if count == 0:
            return SearchPage(total, [])
        query = query.offset(start)
        if count is not None:
            query = query.limit(count)
        if kind == "User":
            rows = session.connection().execute(query)
            return SearchPage(total, [self._user_resource(r) for r in rows])
        groups = list(session.scalars(query))
        return SearchPage(total, self._group_resources(session, groups))

    def _by_id(self, column: Any) -> Any:
        """Order by id as Python does (code points), whatever the database collation."""
        return column.collate("C") if self.db.is_postgres else column

    def _load(
        self, session: Session, kind: str, narrowing: ColumnElement[bool] | None
    ) -> list[Resource[Any]]:
        if kind == "User":
            query = select(USERS).where(User.deleted_at.is_(None))
            if narrowing is not None:
                query = query.where(narrowing)
            return [self._user_resource(r) for r in session.connection().execute(query)]
        query = select(Group)
        if narrowing is not None:
            query = query.where(narrowing)
        return self._group_resources(session, list(session.scalars(query)))

    def _narrowing(self, kind: str, scim_filter: ScimFilter[Any] | None) -> tuple[Any, bool]:
        """A SQL condition true for every row the filter can match, and whether it is exact.

        Only ``eq`` on an indexed column narrows. Those columns hold the value
        under the policy's comparison key, so such a comparison in SQL is the
        comparison scim2-models makes: exact. ``and`` keeps any narrowing term,
        ``or`` narrows only when every term does. Anything else (``not``, ``pr``,
        ``co``, value paths...) reads every row and lets scim2-models decide.
        ``(None, False)`` means: read every row.
        """
        if scim_filter is None:
            return None, True
        inexact: tuple[Any, bool] = (None, False)

        def visit(node: Any) -> tuple[Any, bool]:
            if isinstance(node, Comparison):
                compared = self._indexed_eq(kind, scim_filter, node)
                if compared is None:
                    return inexact
                column, value = compared
                return (false() if value is None else column == value), True
            if isinstance(node, LogicalExpr):
                terms = [visit(term) for term in node.terms]
                if node.op == LogicalOperator.and_:
                    kept = [clause for clause, _ in terms if clause is not None]
                    exact = all(clause is not None and ok for clause, ok in terms)
                    return (and_(*kept), exact) if kept else inexact
                if node.op == LogicalOperator.or_ and all(c is not None for c, _ in terms):
                    return or_(*(c for c, _ in terms)), all(ok for _, ok in terms)
            return inexact

        return visit(scim_filter.ast)

    def _indexed_eq(
        self, kind: str, scim_filter: ScimFilter[Any], node: Comparison
    ) -> tuple[Any, str | None] | None:
        """``(column, value)`` when ``node`` is ``eq`` on an indexed column, else None.

        The value is under the column's comparison key; None when no row can hold
        it (a NUL, or a value that cannot be compared).
        """
        if node.op != CompareOperator.eq or not isinstance(node.value, str):
            return None
        try:
            binding = scim_filter.resolve_comparison(node.attr_path, strict=False)
        except Exception:  # noqa: BLE001 - an unresolvable path just does not narrow
            return None
        indexed = INDEXED[kind].get(binding.urn) if binding is not None else None
        if indexed is None:
            return None
        column, keyed = indexed
        if "\x00" in node.value:  # never stored (see _dump)
            return column, None
        model = self.user_model if kind == "User" else self.group_model
        try:
            return column, column_key(model, keyed, node.value) if keyed else node.value
        except ValueError:
            return column, None

    def _user_lookup(
        self, session: Session, scim_filter: ScimFilter[Any]
    ) -> list[Resource[Any]] | None:
        """The users a filter of one indexed ``eq`` selects, by a prebuilt query.

        The common lookup (Okta and Entra ID look a user up by ``userName eq``
        before each create) then costs no statement building. None for any
        other filter.
        """
        if not isinstance(scim_filter.ast, Comparison):
            return None
        compared = self._indexed_eq("User", scim_filter, scim_filter.ast)
        if compared is None:
            return None
        column, value = compared
        if value is None:
            return []
        rows = session.connection().execute(USER_BY[column.key], {"value": value})
        return [self._user_resource(r) for r in rows]

    # -- Row <-> resource ------------------------------------------------

    def _meta(self, kind: str, row: Any) -> dict[str, Any]:
        return {
            "resourceType": kind,
            "created": row.created_at,
            "lastModified": row.updated_at,
            "version": version_tag(row.version),
        }

    def _user_resource(self, row: Any) -> Resource[Any]:
        """The resource of a ``users`` row (an ORM object or a Core row)."""
        if row.scim_resource is not None:
            data = dict(row.scim_resource)
        else:  # a user made by the CLI, before any SCIM client wrote it
            data = {"schemas": [USER_SCHEMA], "userName": row.user_name}
            if row.display_name:
                data["displayName"] = row.display_name
            if row.email:
                data["emails"] = [{"value": row.email, "primary": True}]
        # The column the login path reads wins. A client that never sent ``active``
        # (the user is then active) or removed it (the user keeps the state it had,
        # see update) is shown it as it sent it: unassigned.
        if "active" in data or (row.scim_resource is None and not row.active):
            data["active"] = bool(row.active)
        data["id"] = row.id
        data["meta"] = self._meta("User", row)
        return self.user_model.model_validate(data)

    def _group_resources(self, session: Session, rows: list[Any]) -> list[Resource[Any]]:
        """The resources of ``groups`` rows (ORM objects, or anything with their attributes)."""
        members: dict[str, list[dict[str, Any]]] = {row.id: [] for row in rows}
        if rows:
            for m in session.scalars(
                select(GroupMember)
                .where(GroupMember.group_id.in_(list(members)))
                .order_by(GroupMember.id)
            ):
                entry = {"value": m.value, "type": m.type, "$ref": f"{m.type}s/{m.value}"}
                if m.display is not None:
                    entry["display"] = m.display
                members[m.group_id].append(entry)
        resources = []
        for row in rows:
            data = dict(row.scim_resource or {"schemas": [GROUP_SCHEMA]})
            data["displayName"] = row.display_name
            if members[row.id]:
                data["members"] = members[row.id]
            data["id"] = row.id
            data["meta"] = self._meta("Group", row)
            resources.append(self.group_model.model_validate(data))
        return resources

    @staticmethod
    def _dump(resource: Resource[Any], *, drop: set[str] = NOT_STORED) -> dict[str, Any]:
        """The resource as stored: JSON, declared schema URNs only, no id/meta/password."""
        data = resource.model_dump(mode="json", scim_ctx=Context.DEFAULT)
        if _has_nul(data):  # PostgreSQL stores no NUL in text or JSON
            raise InvalidValueException(detail="values cannot contain NUL characters")
        for key in drop:
            data.pop(key, None)
        model = type(resource)
        declared = {str(model.__schema__)} | {str(u) for u in model.get_extension_models()}
        data["schemas"] = [s for s in data.get("schemas") or [] if s in declared] or [
            str(model.__schema__)
        ]
        return data

    @staticmethod
    def _key(model: type[Resource[Any]], attribute: str, value: str | None) -> str | None:
        """``value`` under the comparison key, as indexed columns hold it."""
        if value is None:
            return None
        try:
            return comparison_key(model, attribute, value)
        except ValueError:
            raise InvalidValueException(detail=f"{attribute} cannot be compared") from None

    def _user_values(self, resource: Resource[Any]) -> dict[str, Any]:
        user_name = cast(str | None, getattr(resource, "user_name", None))
        if not user_name:
            raise InvalidValueException(detail="userName is required")
        try:
            comparison_key(self.user_model, "userName", user_name)
        except ValueError:
            raise InvalidValueException(detail="userName cannot be compared") from None
        key = _identifier(user_name, "userName")
        if len(user_name) > 256 or len(key) > 256:
            raise InvalidValueException(detail="userName is longer than 256 characters")
        external_id = resource.external_id
        if external_id is not None and len(external_id) > 256:
            raise InvalidValueException(detail="externalId is longer than 256 characters")
        active = getattr(resource, "active", None)
        display_name = getattr(resource, "display_name", None)
        return {
            "user_name": user_name,
            "user_name_lower": key,
            "email": _primary_email(resource),
            "display_name": display_name[:256] if display_name else None,
            "external_id": self._key(self.user_model, "externalId", external_id),
            "active": True if active is None else bool(active),
            "scim_resource": self._dump(resource),
        }

    def _group_values(self, resource: Resource[Any]) -> dict[str, Any]:
        name = cast(str | None, getattr(resource, "display_name", None))
        if not name:
            raise InvalidValueException(detail="displayName is required")
        try:
            comparison_key(self.group_model, "displayName", name)
        except ValueError:
            raise InvalidValueException(detail="displayName cannot be compared") from None
        key = _identifier(name, "displayName")
        if len(name) > 256 or len(key) > 256:
            raise InvalidValueException(detail="displayName is longer than 256 characters")
        external_id = resource.external_id
        if external_id is not None and len(external_id) > 256:
            raise InvalidValueException(detail="externalId is longer than 256 characters")
        return {
            "display_name": name,
            "display_name_key": key,
            "external_id": self._key(self.group_model, "externalId", external_id),
            "scim_resource": self._dump(resource, drop=NOT_STORED | {"members"}),
        }

    # -- Writes ----------------------------------------------------------

    def create(self, resource_type: ResourceType, resource: Resource[Any]) -> Resource[Any]:
        kind = self._kind(resource_type)
        now = utcnow()
        new_id = uuid.uuid4().hex
        with self._session() as session:
            if kind == "User":
                values = self._user_values(resource)
                values.update(
                    id=new_id,
                    version=1,
                    created_at=now,
                    updated_at=now,
                    deactivated_at=None if values["active"] else now,
                )
                self._insert(session, INSERT_USER, values, "userName")
                return self._user_resource(SimpleNamespace(**values))
            values = self._group_values(resource)
            members = self._members(session, resource, new_id)
            values.update(id=new_id, version=1, created_at=now, updated_at=now)
            self._insert(session, GROUPS.insert(), values, "displayName")
            self._write_members(session, new_id, members)
            return self._group_resources(session, [SimpleNamespace(**values)])[0]

    @staticmethod
    def _insert(session: Session, statement: Any, values: dict[str, Any], attribute: str) -> None:
        """INSERT one row of ``values``; a uniqueness clash on ``attribute`` is a 409.

        A Core statement, not an ORM flush: a failed flush would roll back the
        whole request's transaction, where a failed statement leaves it usable.
        """
        try:
            session.connection().execute(statement, values)
        except IntegrityError:
            raise UniquenessException(detail=f"{attribute} is already taken") from None

    def update(
        self,
        resource_type: ResourceType,
        resource: Resource[Any],
        *,
        expected_version: str | None = None,
    ) -> Resource[Any]:
        kind = self._kind(resource_type)
        resource_id = cast(str, resource.id)
        if _has_nul(resource_id):
            raise NotFoundException(detail=f"{kind} not found")
        now = utcnow()
        with self._session() as session:
            table: Any = User if kind == "User" else Group
            query = select(table.version).where(table.id == resource_id)
            if kind == "User":
                query = select(User.version, User.active).where(
                    User.id == resource_id, User.deleted_at.is_(None)
                )
            current = session.connection().execute(query.with_for_update()).first()
            if current is None:
                raise NotFoundException(detail=f"{kind} {resource_id!r} not found")
            if expected_version is not None and version_tag(current.version) != expected_version:
                raise PreconditionFailedException
            if kind == "User":
                values = self._user_values(resource)
                was_active = bool(current.active)
                if getattr(resource, "active", None) is None:
                    # Left out (a PUT without it, a PATCH removing it or setting it to
                    # null): unassigned, not true. Only an explicit true reactivates.
                    values["active"] = was_active
                if was_active and not values["active"]:
                    values["deactivated_at"] = now
                elif values["active"] and not was_active:
                    values["deactivated_at"] = None
            else:
                values = self._group_values(resource)
                members = self._members(session, resource, resource_id)
            try:
                result = session.connection().execute(
                    update(table)
                    .where(table.id == resource_id, table.version == current.version)
                    .values(version=current.version + 1, updated_at=now, **values)
                )
            except IntegrityError:
                name = "userName" if kind == "User" else "displayName"
                raise UniquenessException(detail=f"{name} is already taken") from None
            if result.rowcount != 1:  # changed by a concurrent request since we read it
                raise PreconditionFailedException
            if kind == "Group":
                self._write_members(session, resource_id, members)
                end_where_not_admin(session, self.admin_group)
                group = cast(Group, session.get(Group, resource_id, populate_existing=True))
                return self._group_resources(session, [group])[0]
            if was_active != values["active"]:
                if values["active"]:
                    lifecycle.reactivated(
                        session, resource_id, actor=self._actor, policy=self.reactivation
                    )
                else:
                    lifecycle.deactivated(session, resource_id, actor=self._actor, via="update")
            user = cast(User, session.get(User, resource_id, populate_existing=True))
            return self._user_resource(user)

    def delete(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        expected_version: str | None = None,
    ) -> None:
        kind = self._kind(resource_type)
        if _has_nul(resource_id):
            raise NotFoundException(detail=f"{kind} not found")
        now = utcnow()
        with self._session() as session:
            table: Any = User if kind == "User" else Group
            query = select(table.version).where(table.id == resource_id)
            if kind == "User":
                query = select(User.version, User.active).where(
                    User.id == resource_id, User.deleted_at.is_(None)
                )
            current = session.connection().execute(query.with_for_update()).first()
            if current is None:
                raise NotFoundException(detail=f"{kind} {resource_id!r} not found")
            if expected_version is not None and version_tag(current.version) != expected_version:
                raise PreconditionFailedException
            if kind == "Group":
                self._drop_memberships(session, resource_id, now)
                session.connection().execute(
                    MEMBERS.delete().where(GroupMember.group_id == resource_id)
                )
                session.connection().execute(GROUPS.delete().where(Group.id == resource_id))
                end_where_not_admin(session, self.admin_group)
                return
            # The row stays: devices and audit events refer to it. It becomes an
            # inactive tombstone whose userName is free for a new user. This is the
            # statement that can fail (a row written before ~deleted~ was reserved
            # holds the key), so it runs before any other write (see operation()).
            try:
                session.connection().execute(
                    update(User)
                    .where(User.id == resource_id)
                    .values(
                        active=False,
                        deleted_at=now,
                        deactivated_at=now if current.active else User.deactivated_at,
                        user_name_lower=f"{DELETED_PREFIX}{resource_id}",
                        version=current.version + 1,
                        updated_at=now,
                    )
                )
            except IntegrityError:
                raise ConflictException(
                    detail="another user holds this user's deleted-user key; rename it first"
                ) from None
            self._drop_memberships(session, resource_id, now)
            lifecycle.deleted(session, resource_id, actor=self._actor, was_active=current.active)

    # -- Members ---------------------------------------------------------

    def _members(
        self, session: Session, resource: Resource[Any], group_id: str
    ) -> list[tuple[str, str, str | None]]:
        """(value, type, display) of each member, checked to exist, without duplicates."""
        wanted: dict[str, str | None] = {}
        for member in getattr(resource, "members", None) or []:
            if not member.value or _has_nul(member.value) or len(member.value) > 64:
                raise InvalidValueException(detail="a member value is not a resource id")
            wanted.setdefault(member.value, member.display)
        if not wanted:
            return []
        ids = list(wanted)
        users = set(
            session.scalars(select(User.id).where(User.id.in_(ids), User.deleted_at.is_(None)))
        )
        groups = set(session.scalars(select(Group.id).where(Group.id.in_(ids))))
        if group_id in ids:
            raise InvalidValueException(detail="a group cannot be a member of itself")
        unknown = [v for v in ids if v not in users and v not in groups and v != group_id]
        if unknown:
            raise InvalidValueException(detail=f"no User or Group with id {unknown[0]!r}")
        return [(v, "User" if v in users else "Group", _clip(wanted[v])) for v in ids]

    def _write_members(
        self, session: Session, group_id: str, members: list[tuple[str, str, str | None]]
    ) -> None:
        """Make the group's member rows equal ``members``, writing only the differences."""
        table = MEMBERS
        existing = {
            m.value: m
            for m in session.connection().execute(
                select(GroupMember.value, GroupMember.display).where(
                    GroupMember.group_id == group_id
                )
            )
        }
        wanted = {value: (kind, display) for value, kind, display in members}
        gone = [v for v in existing if v not in wanted]
        if gone:
            session.connection().execute(
                table.delete().where(GroupMember.group_id == group_id, GroupMember.value.in_(gone))
            )
        new = [
            {"group_id": group_id, "value": v, "type": kind, "display": display}
            for v, (kind, display) in wanted.items()
            if v not in existing
        ]
        if new:
            session.connection().execute(table.insert(), new)
        for v, (_kind, display) in wanted.items():
            if v in existing and existing[v].display != display:
                session.connection().execute(
                    update(GroupMember)
                    .where(GroupMember.group_id == group_id, GroupMember.value == v)
                    .values(display=display)
                )

    def _drop_memberships(self, session: Session, member_id: str, now: Any) -> None:
        """Remove a deleted resource from every group, and bump those groups' versions."""
        holders = list(
            session.scalars(select(GroupMember.group_id).where(GroupMember.value == member_id))
        )
        if not holders:
            return
        session.connection().execute(MEMBERS.delete().where(GroupMember.value == member_id))
        session.connection().execute(
            update(Group)
            .where(Group.id.in_(holders))
            .values(version=Group.version + 1, updated_at=now)
        )


def _primary_email(resource: Resource[Any]) -> str | None:
    """The address to keep in ``users.email``: primary, else work, else the first."""
    emails = [e for e in getattr(resource, "emails", None) or [] if e.value]
    if not emails:
        return None
    chosen = next(
        (e for e in emails if e.primary),
        next((e for e in emails if (e.type or "").lower() == "work"), emails[0]),
    )
    return str(chosen.value)[:320]


def _comparisons(node: Any) -> int:
    """How many comparisons (``eq``, ``pr``...) a filter's syntax tree holds, at any depth."""
    count, pending = 0, [node]
    while pending:
        node = pending.pop()
        if isinstance(node, LogicalExpr):
            pending.extend(node.terms)
        elif isinstance(node, Not):
            pending.append(node.expr)
        elif isinstance(node, ValuePath):
            pending.append(node.val_filter)
        else:
            count += 1
    return count


def _has_nul(value: Any) -> bool:
    """Whether a JSON value holds a NUL character anywhere, keys included."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _clip(display: str | None) -> str | None:
    """A member's display name as stored: at most 256 characters, empty as None."""
    return display[:256] if display else None
