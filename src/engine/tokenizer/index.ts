// Public entry of the tokenizer module.
export { Tokenizer, byteLevelTokenizer, type TokenizerOptions } from './tokenizer.ts';
export { byteLevelTokenizerJson, byteToCharTable, END_OF_TEXT } from './byte-level.ts';
