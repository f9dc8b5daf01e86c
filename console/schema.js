/* A JSON Schema (draft 2020-12) check of the keywords the MES schemas in schemas/mes/ use: type,
   properties, required, additionalProperties, items, minItems, maxItems, enum, const, anyOf, $ref to
   $defs, minLength, maxLength, pattern, minimum, maximum, exclusiveMinimum, exclusiveMaximum, format
   date-time. The bridge validates again when the message arrives; this tells the operator before
   sending. An unknown keyword is reported, never silently ignored. */
"use strict";

(function () {
  const KNOWN = new Set([
    "$schema", "$id", "$defs", "$ref", "title", "description", "default", "examples", "type", "properties", "required",
    "additionalProperties", "items", "minItems", "maxItems", "enum", "const", "anyOf", "minLength", "maxLength",
    "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "format",
  ]);
  const DATE_TIME = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

  function typeOf(value) {
    if (value === null) return "null";
    if (Array.isArray(value)) return "array";
    if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
    return typeof value;
  }

  function hasType(value, wanted) {
    const actual = typeOf(value);
    return actual === wanted || (wanted === "number" && actual === "integer");
  }

  function pattern(source) {
    try {
      return new RegExp(source, "u");
    } catch (e) {
      return new RegExp(source); // a Python-style escape the unicode mode refuses
    }
  }

  function codePoints(text) {
    return Array.from(text).length;
  }

  function check(schema, value, path, root, errors) {
    if (schema === true || schema === undefined) return;
    if (schema === false) {
      errors.push(`${path || "(document)"}: not allowed`);
      return;
    }
    for (const key of Object.keys(schema)) {
      if (!KNOWN.has(key)) errors.push(`${path || "(document)"}: the schema uses ${key}, which this page cannot check`);
    }
    const where = path || "(document)";
    if (schema.$ref) {
      const name = schema.$ref.replace(/^#\/\$defs\//, "");
      check((root.$defs || {})[name], value, path, root, errors);
    }
    if (schema.anyOf) {
      const passes = schema.anyOf.some((option) => {
        const found = [];
        check(option, value, path, root, found);
        return found.length === 0;
      });
      if (!passes) {
        const first = [];
        check(schema.anyOf.find((o) => o.type && hasType(value, o.type)) || schema.anyOf[0], value, path, root, first);
        errors.push(...(first.length ? first : [`${where}: matches none of the allowed forms`]));
      }
    }
    if (schema.type && !hasType(value, schema.type)) {
      errors.push(`${where}: must be ${schema.type}, not ${typeOf(value)}`);
      return;
    }
    if ("const" in schema && value !== schema.const) errors.push(`${where}: must be ${JSON.stringify(schema.const)}`);
    if (schema.enum && !schema.enum.includes(value)) {
      errors.push(`${where}: must be one of ${schema.enum.map((v) => JSON.stringify(v)).join(", ")}`);
    }
    if (typeof value === "string") {
      if (schema.minLength !== undefined && codePoints(value) < schema.minLength) {
        errors.push(`${where}: at least ${schema.minLength} character(s)`);
      }
      if (schema.maxLength !== undefined && codePoints(value) > schema.maxLength) {
        errors.push(`${where}: at most ${schema.maxLength} characters`);
      }
      if (schema.pattern && !pattern(schema.pattern).test(value)) errors.push(`${where}: does not match ${schema.pattern}`);
      if (schema.format === "date-time" && !DATE_TIME.test(value)) errors.push(`${where}: must be a date-time with an offset`);
    }
    if (typeof value === "number") {
      if (schema.minimum !== undefined && value < schema.minimum) errors.push(`${where}: at least ${schema.minimum}`);
      if (schema.maximum !== undefined && value > schema.maximum) errors.push(`${where}: at most ${schema.maximum}`);
      if (schema.exclusiveMinimum !== undefined && value <= schema.exclusiveMinimum) {
        errors.push(`${where}: more than ${schema.exclusiveMinimum}`);
      }
      if (schema.exclusiveMaximum !== undefined && value >= schema.exclusiveMaximum) {
        errors.push(`${where}: less than ${schema.exclusiveMaximum}`);
      }
    }
    if (Array.isArray(value)) {
      if (schema.minItems !== undefined && value.length < schema.minItems) errors.push(`${where}: at least ${schema.minItems} item(s)`);
      if (schema.maxItems !== undefined && value.length > schema.maxItems) errors.push(`${where}: at most ${schema.maxItems} items`);
      if (schema.items) value.forEach((item, i) => check(schema.items, item, `${path}[${i}]`, root, errors));
    }
    if (typeOf(value) === "object") {
      const properties = schema.properties || {};
      for (const name of schema.required || []) {
        if (!(name in value)) errors.push(`${path ? path + "." : ""}${name}: required`);
      }
      for (const [name, item] of Object.entries(value)) {
        const child = path ? `${path}.${name}` : name;
        if (name in properties) check(properties[name], item, child, root, errors);
        else if (schema.additionalProperties === false) errors.push(`${child}: not a field of this message`);
        else if (typeof schema.additionalProperties === "object") check(schema.additionalProperties, item, child, root, errors);
      }
    }
  }

  /** The problems of `value` against `schema`, as readable lines (empty when it is valid). */
  window.validateAgainstSchema = function (schema, value) {
    const errors = [];
    check(schema, value, "", schema, errors);
    return Array.from(new Set(errors));
  };
})();
