/**
 * Kept in step with package.json (compiled code cannot reach package.json at the same relative path from src/ and
 * dist/src/).
 */
export const VERSION = '0.1.0';
