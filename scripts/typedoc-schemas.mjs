// @ts-check
// A typedoc plugin for the API reference (`npm run docs:api`): an exported zod schema
// (`…Schema`) is shown as its zod type alone (`ZodObject`, `ZodPipe`…), not as the expansion of
// zod's generics. That expansion repeats, undocumented and unreadable, what the interface beside
// each schema (`…Options`) documents option by option; the schema's own comment points there.
import { Converter, ReferenceType, ReflectionKind, ReflectionType } from "typedoc";

/** @param {import("typedoc").Application} app */
export function load(app) {
  app.converter.on(Converter.EVENT_RESOLVE_BEGIN, (context) => {
    const project = context.project;
    for (const reflection of project.getReflectionsByKind(ReflectionKind.Variable)) {
      if (!reflection.name.endsWith("Schema") || !("type" in reflection)) continue;
      const type = reflection.type;
      if (!(type instanceof ReferenceType)) continue;
      // Drop the reflections typedoc made for the type literals inside zod's type arguments.
      for (const argument of type.typeArguments ?? [])
        forEachReflectionType(argument, (inner) => project.removeReflection(inner.declaration));
      type.typeArguments = undefined;
    }
  });
}

/**
 * @param {unknown} type
 * @param {(type: ReflectionType) => void} found
 */
function forEachReflectionType(type, found) {
  if (type instanceof ReflectionType) return found(type);
  if (typeof type !== "object" || type === null) return;
  for (const value of Object.values(type)) {
    if (Array.isArray(value)) for (const item of value) forEachReflectionType(item, found);
    else if (value && typeof value === "object" && "type" in value && typeof value.type === "string")
      forEachReflectionType(value, found);
  }
}
