// The query-server helpers every design-document function sees, and the entry points the Rust
// side calls. Evaluated once per sandbox; the collected rows and logs stay in this closure, out
// of reach of user code. After CouchDB's share/server/{views,filter,validate,util}.js and
// dispatch-quickjs.js (create_sandbox).
(function () {
  "use strict";
  var g = globalThis;
  var funs = [];
  var results = [];
  var logs = [];
  var ddoc = null;
  // Captured now, so a function that replaces JSON cannot break the answers.
  var stringify = JSON.stringify;
  var parse = JSON.parse;

  // views.js: emit pushes [key, value]; JSON.stringify turns undefined into null.
  g.emit = function (key, value) {
    results.push([key, value]);
  };
  // util.js: log(message), non-strings as JSON.
  g.log = function (message) {
    if (typeof message != "string") {
      message = stringify(message);
    }
    logs.push(String(message));
  };
  // views.js
  g.sum = function (values) {
    var rv = 0;
    for (var i in values) {
      rv += values[i];
    }
    return rv;
  };
  // util.js
  g.isArray = function (obj) {
    return Object.prototype.toString.call(obj) === "[object Array]";
  };
  // dispatch-quickjs.js: sandbox.toJSON = JSON.stringify
  g.toJSON = JSON.stringify;

  // No clock: a design-document function is a function of the document (and nothing below the
  // hub reads the wall clock). `Date.now()`, `new Date()` and `Date()` without a time throw;
  // dates made from document values (`new Date(doc.time)`, `Date.UTC`, `Date.parse`) work.
  var RealDate = g.Date;
  class Date extends RealDate {
    constructor() {
      if (arguments.length === 0) {
        throw new Error("no clock here: give Date a time");
      }
      super(...arguments);
    }
    static now() {
      throw new Error("no clock here: Date.now is not available");
    }
  }
  Object.defineProperty(g, "Date", {
    value: Date,
    writable: true,
    enumerable: false,
    configurable: true
  });

  // util.js recursivelySeal + dispatch-quickjs.js seal (Object.freeze): a map function cannot
  // change the document another map function sees.
  function seal(obj) {
    Object.freeze(obj);
    for (var p in obj) {
      if (typeof obj[p] == "object" && obj[p] !== null) {
        seal(obj[p]);
      }
    }
  }

  function start() {
    results = [];
    logs = [];
  }

  function finish(value) {
    var out = stringify({
      rows: results,
      logs: logs,
      value: value === undefined ? null : value
    });
    start();
    return out;
  }

  var api = {
    add: function (fun) {
      funs.push(fun);
      return funs.length - 1;
    },
    setDdoc: function (json) {
      ddoc = parse(json);
    },
    // views.js mapDoc
    map: function (index, doc) {
      var fun = funs[index];
      start();
      doc = parse(doc);
      seal(doc);
      fun(doc);
      return finish(null);
    },
    // views.js runReduce: (keys, values, rereduce); keys is null on rereduce.
    reduce: function (index, keys, values, rereduce) {
      var fun = funs[index];
      start();
      return finish(fun(parse(keys), parse(values), rereduce));
    },
    // filter.js: `this` is the design document; JavaScript truthiness.
    filter: function (index, doc, req) {
      var fun = funs[index];
      start();
      return finish((fun.apply(ddoc, [parse(doc), parse(req)]) && true) || false);
    },
    // validate.js: a thrown Error object (name and stack) is an error; any other thrown value
    // is the answer ({forbidden: ...}, {unauthorized: ...}, ...).
    validate: function (index, args) {
      var fun = funs[index];
      start();
      try {
        fun.apply(ddoc, parse(args));
      } catch (error) {
        if (error && error.name && error.stack) {
          throw error;
        }
        var out = stringify({
          rows: [],
          logs: logs,
          value: { threw: true, thrown: error === undefined ? null : error }
        });
        start();
        return out;
      }
      return finish(1);
    }
  };
  Object.freeze(api);
  Object.defineProperty(g, "__couchdb__", {
    value: api,
    enumerable: false,
    writable: false,
    configurable: false
  });
})();
