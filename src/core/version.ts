/** The library's version, recorded in every manifest. A unit test keeps it equal to package.json's. */
export const VERSION = "0.1.0";
