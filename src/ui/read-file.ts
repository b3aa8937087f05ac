// Reads a text file the user picked or dropped into a string for the editor: UTF-8 (with or without a byte-order
// mark) or UTF-16 (what spreadsheets save as "Unicode text"), told apart by the byte-order mark.

export async function readTextFile(file: Blob): Promise<string> {
  const bytes = new Uint8Array(await file.arrayBuffer());
  let encoding = 'utf-8';
  if (bytes[0] === 0xff && bytes[1] === 0xfe) encoding = 'utf-16le';
  else if (bytes[0] === 0xfe && bytes[1] === 0xff) encoding = 'utf-16be';
  // The decoder drops the byte-order mark; bytes that are not valid text become U+FFFD rather than an error.
  return new TextDecoder(encoding).decode(bytes);
}
