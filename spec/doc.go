// Package spec is berth's definition language: the Machine, Network and Image
// documents, strict decoding with file:line:column errors, validation, defaults and
// a stable content hash of each defaulted definition.
package spec
