/**
 * Compile-time checks between a documented option interface and its zod schema.
 *
 * An option type written as `z.input<typeof schema>` loses its fields' comments in the published
 * .d.ts (no doc, no `@default` on hover), so every public option type is an interface with JSDoc,
 * written beside its schema and checked there with
 * `type _FooAgrees = Assert<Agrees<FooOptions, z.input<typeof fooSchema>>>`: a field added,
 * removed, made required or retyped on one side only fails `tsc`.
 */

/**
 * `true` when `A` and `B` are assignable both ways and have the same keys (assignability alone
 * lets an optional field on one side go unnoticed).
 */
export type Agrees<A, B> = [A] extends [B]
  ? [B] extends [A]
    ? [keyof A] extends [keyof B]
      ? [keyof B] extends [keyof A]
        ? true
        : false
      : false
    : false
  : false;

/** Compiles only when given `true`. */
export type Assert<T extends true> = T;
