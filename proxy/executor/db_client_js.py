"""`ctx.db` for handlers: a supabase-js-like query builder that sends one JSON spec to the host.

Strategy: the builder in JS only records what the handler asked for; every decision that matters
(table prefix, site filter, quoting, limits) is made in Python by `data_access.execute_query`, so
nothing a handler does to the builder's internals can widen what it reaches. Awaiting a builder
sends the spec once through `call(specJson)` (the host function) and resolves to
`{ data, error }`; it rejects only when the host call itself fails. The spec format is the
contract documented in `proxy/executor/data_access.py`.

Defines exactly one global, `__modgateMakeDb(call)`, which returns the `db` object.
"""

from __future__ import annotations

DB_CLIENT_JS = r"""
function __modgateMakeDb(call) {
  "use strict";
  const FILTER_OPS = ["eq", "neq", "gt", "gte", "lt", "lte", "in", "like", "ilike"];

  function QueryBuilder(table) {
    this._spec = {
      table: table, action: "select", columns: "*", values: null, filters: [],
      order: [], limit: null, range: null, single: null,
    };
    this._promise = null;
  }
  const proto = QueryBuilder.prototype;

  // select() on a write asks for the written rows back, as in supabase-js.
  proto.select = function (columns) {
    this._spec.columns = columns === undefined ? "*" : columns;
    return this;
  };
  proto.insert = function (values) { return this._write("insert", values); };
  proto.update = function (values) { return this._write("update", values); };
  proto.delete = function () { return this._write("delete", null); };
  proto._write = function (action, values) {
    this._spec.action = action;
    this._spec.values = values === undefined ? null : values;
    this._spec.columns = null;
    return this;
  };
  FILTER_OPS.forEach(function (op) {
    proto[op] = function (column, value) {
      this._spec.filters.push([op, column, value === undefined ? null : value]);
      return this;
    };
  });
  proto.order = function (column, options) {
    const ascending = !(options && options.ascending === false);
    this._spec.order.push([column, ascending]);
    return this;
  };
  proto.limit = function (count) { this._spec.limit = count; return this; };
  proto.range = function (from, to) { this._spec.range = [from, to]; return this; };
  proto.single = function () { this._spec.single = "single"; return this; };
  proto.maybeSingle = function () { this._spec.single = "maybeSingle"; return this; };

  // A thenable: `await builder` runs the query once, however often then() is called.
  proto.then = function (onFulfilled, onRejected) {
    if (this._promise === null) {
      this._promise = Promise.resolve(call(JSON.stringify(this._spec))).then(function (text) {
        const result = JSON.parse(text);
        return {
          data: result.data === undefined ? null : result.data,
          error: result.error === undefined ? null : result.error,
        };
      });
    }
    return this._promise.then(onFulfilled, onRejected);
  };
  proto.catch = function (onRejected) { return this.then(undefined, onRejected); };
  proto.finally = function (onFinally) {
    return this.then().finally(onFinally);
  };

  return Object.freeze({
    from: function (table) { return new QueryBuilder(table); },
  });
}
"""
